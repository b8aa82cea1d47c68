"""The paper's Figures 2-4 redrawn from this run's outputs, and the baselines' noise curves (matplotlib,
PNG + SVG).

Uses matplotlib's object API (`Figure`, no pyplot), so nothing needs a display and no global
figure registry leaks between calls.
"""

from itertools import cycle
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from gattanet.io import atomic_path

BASELINE_COLOR, GATTANET_COLOR = "#555555", "#c0392b"
KIND_COLORS = {"none": "#888888", "full": "#c0392b", "ablate": "#2e6f9e", "alone": "#e39b2f"}
MAX_MAP_SAMPLES = 10
MAX_BARS = 64


def save(fig: Figure, out_dir: Path, name: str) -> dict[str, str]:
    """Write `name`.png and `name`.svg atomically under out_dir/figures; links relative to out_dir."""
    links = {}
    fig.draw_without_rendering()     # lay out once (constrained layout) ...
    fig.set_layout_engine("none")    # ... and keep it: each savefig would redo it
    # fixed SVG ids and no date stamp: the same data gives byte-identical files (DVC-friendly)
    with matplotlib.rc_context({"svg.hashsalt": "gattanet"}):
        for fmt, meta in (("png", {"Software": None}), ("svg", {"Date": None})):
            path = Path(out_dir) / "figures" / f"{name}.{fmt}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=110, metadata=meta)
            links[fmt] = f"figures/{name}.{fmt}"
    return links


def _zero_x(sigmas: np.ndarray) -> float:
    """Where σ = 0 sits on a log axis: half the smallest positive σ."""
    positive = sigmas[sigmas > 0]
    return positive.min() / 2 if positive.size else 1e-3


def _sigma_ticks(ax, sigmas: np.ndarray, zero_x: float) -> None:
    """Log σ axis with one labelled tick per measured σ (σ = 0 at zero_x, labelled 0)."""
    ax.set_xscale("log")
    ax.set_xticks(np.where(sigmas > 0, sigmas, zero_x), ["0" if s == 0 else f"{s:g}" for s in sigmas],
                  rotation=45, fontsize=8)
    ax.minorticks_off()


def noise_curve(sweep: dict, title: str) -> Figure:
    """Accuracy vs noise σ (log axis; σ = 0 drawn left of the smallest σ) and the gain with its CI."""
    sig = np.asarray(sweep["sigmas"], dtype=float)
    order = np.argsort(sig)
    sig = sig[order]
    zero_x = _zero_x(sig)
    x = np.where(sig > 0, sig, zero_x)
    gain = sweep["gain"]
    series = {k: 100 * np.asarray(v, dtype=float)[order] for k, v in (
        ("baseline", sweep["baseline"]), ("gattanet", sweep["gattanet"]),
        ("diff", [g["mean"] for g in gain]), ("lo", [g["low"] for g in gain]), ("hi", [g["high"] for g in gain]))}

    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    top.plot(x, series["baseline"], "o-", color=BASELINE_COLOR, label="baseline (backbone)")
    top.plot(x, series["gattanet"], "o-", color=GATTANET_COLOR,
             label=f"GAttANet (mean of {len(sweep['seeds'])} seeds)")
    top.set_ylabel("test accuracy (%)")
    top.legend(frameon=False)
    top.set_title(title, fontsize=10)
    bottom.axhline(0, color="black", lw=0.8)
    bottom.fill_between(x, series["lo"], series["hi"], color=GATTANET_COLOR, alpha=0.2, lw=0,
                        label="95 % CI (seeds × test images)")
    star = sweep.get("peak_sigma")
    if star is not None:
        for ax in (top, bottom):
            ax.axvline(star, color="black", ls=":", lw=0.8)
        bottom.annotate("σ*", (star, 1), xycoords=("data", "axes fraction"), ha="left", va="top", fontsize=8)
    bottom.plot(x, series["diff"], "o-", color=GATTANET_COLOR, label="GAttANet − baseline")
    bottom.set_ylabel("gain (points)")
    bottom.set_xlabel("noise σ (log axis; leftmost point: clean)")
    bottom.legend(frameon=False, fontsize=8)
    _sigma_ticks(bottom, sig, zero_x)
    return fig


def baselines_curves(results: list[tuple[str, dict]], title: str, peak_sigma: float | None = None,
                     highlight: str = "GAttANet") -> Figure:
    """Each method's accuracy vs noise σ beside the frozen backbone's (log axis, σ = 0 at the left), and
    below each method minus the backbone. results: (label, baselines file) pairs, drawn in order; the
    backbone curve comes from the first; the `highlight` label is drawn in GAttANet's colour."""
    if not results:
        raise ValueError("baselines_curves: no results to draw")
    everything = np.unique(np.concatenate([np.asarray(r["sigmas"], dtype=float) for _, r in results]))
    zero_x = _zero_x(everything)
    others = cycle(matplotlib.colormaps["tab10"](i) for i in (0, 1, 2, 4, 5, 6, 8, 9))  # no red, no grey

    def curve(r: dict, key: str) -> tuple[np.ndarray, np.ndarray]:
        sig = np.asarray(r["sigmas"], dtype=float)
        order = np.argsort(sig)
        return np.where(sig > 0, sig, zero_x)[order], 100 * np.asarray(r[key], dtype=float)[order]

    fig = Figure(figsize=(7.4, 6.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    x, base = curve(results[0][1], "baseline")
    top.plot(x, base, "s--", color=BASELINE_COLOR, lw=1.6, ms=4, label="frozen backbone", zorder=3)
    bottom.axhline(0, color=BASELINE_COLOR, ls="--", lw=1)
    for label, r in results:
        style = ({"color": GATTANET_COLOR, "lw": 2.2, "zorder": 4} if label == highlight
                 else {"color": next(others), "lw": 1.2})
        x, acc = curve(r, "acc")
        top.plot(x, acc, "o-", ms=3, label=label, **style)
        bottom.plot(x, acc - curve(r, "baseline")[1], "o-", ms=3, **style)
    if peak_sigma is not None:
        for ax in (top, bottom):
            ax.axvline(peak_sigma if peak_sigma > 0 else zero_x, color="black", ls=":", lw=0.8)
    top.set_ylabel("test accuracy (%)")
    top.set_title(title, fontsize=10)
    top.legend(frameon=False, fontsize=7, loc="lower left", ncols=2 if len(results) > 5 else 1)
    bottom.set_ylabel("method − backbone (points)")
    bottom.set_xlabel("noise σ (log axis; leftmost point: clean; dotted: the peak-gain σ)")
    _sigma_ticks(bottom, everything, zero_x)
    return fig


def embedding_scatter(points: dict[str, list], classes: list[str], title: str) -> Figure:
    """2-D embedding of the global query, one colour per class (Fig. 2b)."""
    labels = np.asarray(points["label"])
    n = max(len(classes), int(labels.max()) + 1 if labels.size else 1)
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]
    colors = cmap(np.linspace(0, 1, n)) if n > 20 else cmap(np.arange(n))
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.subplots()
    ax.scatter(points["x"], points["y"], c=labels, cmap=ListedColormap(colors), vmin=-0.5, vmax=n - 0.5,
               s=4, lw=0, rasterized=True)
    if n <= 20:
        for i in range(n):
            ax.scatter([], [], color=colors[i], s=20, label=classes[i] if i < len(classes) else str(i))
        ax.legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5), markerscale=1.2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    return fig


def agreement_maps_figure(maps: dict, max_samples: int = MAX_MAP_SAMPLES) -> Figure:
    """Fig. 3: per image, the image, each conv tap's modulation map α_l·a (RdBu_r centred on 0: red
    enhanced, blue decreased) and each dense tap's α_l·a as bars; on the last tap the true class bar
    is red. α_l·a, not a: the model is the same under (α, W_k) → (−α, −W_k), so only the product says
    which units attention raises (with α > 0 it orders like the paper's scores). A sample with an `item_box`
    (row, column, side on the image: the cluttered set's item) has it outlined on the image and on each conv map."""
    taps, samples, classes = maps["taps"], maps["samples"][:max_samples], maps["classes"]
    fig = Figure(figsize=(1.75 * (len(taps) + 1), 1.55 * len(samples) + 0.4), layout="constrained")
    grid = fig.subplots(len(samples), len(taps) + 1, squeeze=False)
    for r, sample in enumerate(samples):
        ax = grid[r][0]
        image = _as_image(sample["image"])
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
        ax.set_title(f"{_name(classes, sample['label'])}\nbase: {_name(classes, sample['pred_baseline'])}, "
                     f"att: {_name(classes, sample['pred_gattanet'])}", fontsize=6)
        ax.set_xticks([])
        ax.set_yticks([])
        _outline(ax, sample.get("item_box"), 1.0)
        for c, (tap, score) in enumerate(zip(taps, sample["scores"]), start=1):
            ax = grid[r][c]
            score = maps["alpha"][c - 1] * np.asarray(score, dtype=float)
            if tap["kind"] == "conv":
                m = float(np.abs(score).max()) or 1.0
                ax.imshow(score, cmap="RdBu_r", vmin=-m, vmax=m)
                ax.set_yticks([])
                _outline(ax, sample.get("item_box"), score.shape[-1] / image.shape[1])
            else:
                colors = np.full(score.shape[0], "#888888", dtype=object)
                if c == len(taps):
                    colors[sample["label"]] = "#d62728"
                units = np.arange(score.shape[0])
                if score.shape[0] <= MAX_BARS:
                    ax.bar(units, score, width=1.0, color=list(colors), lw=0)
                else:  # hundreds of units: one line collection draws much faster than as many bars
                    ax.vlines(units, 0, score, colors=list(colors), lw=0.6)
                ax.axhline(0, color="black", lw=0.5)
                ax.tick_params(labelsize=5)
            ax.set_xticks([])
            if r == 0:
                ax.set_title(f"{tap['name']} ({tap['kind']}): α·a", fontsize=7)
    return fig


def _outline(ax, box: list | None, scale: float) -> None:
    """The item's square (row, column, side in image pixels) drawn on `ax`, whose pixels are `scale` image pixels."""
    if box:
        from matplotlib.patches import Rectangle

        row, col, side = (v * scale for v in box)
        ax.add_patch(Rectangle((col - 0.5, row - 0.5), side, side, fill=False, ec="#2ca02c", lw=1.0))


def _as_image(image: list) -> np.ndarray:
    """H×W or C×H×W uint8 nested lists -> an array imshow takes (H×W or H×W×3)."""
    a = np.asarray(image, dtype=np.uint8)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    return a


def _name(classes: list[str], i: int) -> str:
    return classes[i] if 0 <= i < len(classes) else str(i)


def lesion_bars(lesion: dict) -> Figure:
    """Fig. 4c: accuracy per lesion pattern; baseline and full model marked by lines and colours."""
    patterns = lesion["patterns"]
    acc = np.array([100 * p["accuracy"] for p in patterns])
    fig = Figure(figsize=(max(5.0, 0.55 * len(patterns) + 1.5), 4.0), layout="constrained")
    ax = fig.subplots()
    ax.bar(np.arange(len(patterns)), acc, color=[KIND_COLORS.get(p["kind"], "#444444") for p in patterns])
    ax.axhline(100 * lesion["baseline_acc"], color=KIND_COLORS["none"], ls="--", lw=1, label="baseline (no modulation)")
    ax.axhline(100 * lesion["full_acc"], color=KIND_COLORS["full"], ls="--", lw=1, label="full model")
    for kind, color in KIND_COLORS.items():
        ax.bar([0], [0], color=color, label={"none": "no modulation", "full": "all layers", "ablate":
                                            "one layer ablated", "alone": "one layer alone"}[kind])
    ax.set_xticks(np.arange(len(patterns)), [p["pattern"] for p in patterns], family="monospace", rotation=60)
    spread = max(acc.max() - acc.min(), 1.0)
    ax.set_ylim(max(0.0, acc.min() - 0.6 * spread), min(100.0, acc.max() + 0.4 * spread))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"lesions of {lesion['run']} (mode: {lesion['mode']})", fontsize=10)
    ax.legend(frameon=False, fontsize=7, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    return fig


def backbone_curve(history: list[dict], run: str, patience: int) -> Figure:
    """The backbone's training and validation accuracy per epoch, the best validation epoch marked and the
    last `patience` epochs shaded: converged when none of them improved on the best."""
    epoch = np.array([h["epoch"] for h in history])
    val, train = (np.array([100 * h[k] for h in history]) for k in ("val_acc", "train_acc"))
    best = int(epoch[np.argmax(val)])
    fig = Figure(figsize=(5.5, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.plot(epoch, train, color=BASELINE_COLOR, ls="--", lw=1, label="training (augmented, dropout on)")
    ax.plot(epoch, val, color=GATTANET_COLOR, marker="o", ms=3, lw=1.5, label="validation")
    ax.axvline(best, color=GATTANET_COLOR, ls=":", lw=1, label=f"best validation epoch ({best})")
    ax.axvspan(max(epoch[-1] - patience, 0) + 0.5, epoch[-1] + 0.5, color="#dddddd", alpha=0.6, lw=0,
               label=f"last {patience} epochs (patience)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"backbone {run}", fontsize=10)
    ax.legend(frameon=False, fontsize=7, loc="lower right")
    return fig


def controls_gains(controls: dict) -> Figure:
    """Each control's gain over the frozen backbone beside GAttANet's, with 95 % CIs (one controls run)."""
    rows = [("GAttANet", controls["gattanet_gain"])] + [(r["method"], r["gain"]) for r in controls["controls"]]
    y = np.arange(len(rows))[::-1]
    mean = np.array([100 * g["mean"] for _, g in rows])
    err = np.array([[100 * (g["mean"] - g["low"]) for _, g in rows], [100 * (g["high"] - g["mean"]) for _, g in rows]])
    fig = Figure(figsize=(5.5, 0.45 * len(rows) + 1.3), layout="constrained")
    ax = fig.subplots()
    colors = [GATTANET_COLOR] + [BASELINE_COLOR] * (len(rows) - 1)
    for yi, m, lo, hi, c in zip(y, mean, err[0], err[1], colors):
        ax.errorbar(m, yi, xerr=[[lo], [hi]], fmt="o", color=c, capsize=3)
    ax.axvline(0, color="#888888", lw=1)
    ax.set_yticks(y, [name for name, _ in rows])
    ax.set_xlabel("gain over the frozen backbone (pts, 95 % CI)")
    ax.set_title(f"controls of {controls['run']}", fontsize=10)
    return fig


VERDICT_COLORS = {"supported": "#1e7a34", "contradicted": "#b02a1a", "inconclusive": "#666666"}
FOREST_LINEAR = 1.0  # points: the forest plot's axis is linear within ±this, logarithmic beyond


def forest_plot(rows: list[dict]) -> Figure:
    """Every tested row's effect with its 95 % CI on one axis (×100: points), grouped by claim: zero, the paper's
    size (diamond) and the row's margin (band) drawn. A row is {group, label, mean, low, high, verdict, test,
    paper_size, margin}; the axis is symmetric-log, linear within ±FOREST_LINEAR, so small and large effects both show."""
    lines, y = [], 0  # (y, row or group title)
    for group in dict.fromkeys(r["group"] for r in rows):
        lines.append((y, group))
        y += 1
        for r in (r for r in rows if r["group"] == group):
            lines.append((y, r))
            y += 1
    fig = Figure(figsize=(11.0, 0.2 * y + 1.1), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.12)
    ax = fig.subplots()
    for yi, r in lines:
        if isinstance(r, str):
            ax.axhspan(yi - 0.5, yi + 0.5, color="#f1f1f1", lw=0)
            ax.text(0.005, yi, r, transform=ax.get_yaxis_transform(), va="center", fontsize=7.5, fontweight="bold")
            continue
        if r["margin"] is not None:
            ax.fill_betweenx([yi - 0.4, yi + 0.4], -100 * r["margin"], 100 * r["margin"], color="#cfe3f3", lw=0)
        color = VERDICT_COLORS.get(r["verdict"], "#999999")
        ax.plot([100 * r["low"], 100 * r["high"]], [yi, yi], color=color, lw=2, solid_capstyle="butt")
        ax.plot(100 * r["mean"], yi, "o", color=color, ms=4)
        if r["paper_size"] is not None:
            ax.plot(100 * r["paper_size"], yi, "D", color="#e39b2f", ms=5, mec="#7a4f0c", mew=0.6)
    ax.axvline(0, color="#222222", lw=0.8)
    ax.set_xscale("symlog", linthresh=FOREST_LINEAR, linscale=1.5)
    reach = max(FOREST_LINEAR, *(100 * max(abs(r["low"]), abs(r["high"])) for r in rows))
    ticks = [t for t in (0.5, 1, 3, 10, 30, 100) if t <= reach * 1.05]
    ax.set_xticks([-t for t in ticks[::-1]] + [0] + ticks, [f"{-t:+g}" for t in ticks[::-1]] + ["0"]
                  + [f"{t:+g}" for t in ticks], fontsize=7.5)
    ax.minorticks_off()
    ax.set_xlim(-reach * 1.15, reach * 1.15)
    ax.set_ylim(y - 0.5, -0.5)
    ax.set_yticks([yi for yi, r in lines if not isinstance(r, str)],
                  [r["label"] for _, r in lines if not isinstance(r, str)], fontsize=7)
    right = ax.twinx()
    right.set_ylim(ax.get_ylim())
    right.set_yticks([yi for yi, r in lines if not isinstance(r, str)],
                     [r["test"] for _, r in lines if not isinstance(r, str)], fontsize=7, color="#555555")
    ax.grid(axis="x", color="#e4e4e4", lw=0.6)
    ax.set_xlabel(f"effect, 95 % CI (points; axis linear within ±{FOREST_LINEAR:g}, logarithmic beyond)")
    handles = [ax.plot([], [], color=c, lw=2, marker="o", ms=4, label=v)[0] for v, c in VERDICT_COLORS.items()]
    handles.append(ax.plot([], [], "D", color="#e39b2f", mec="#7a4f0c", ms=5, label="the paper's size")[0])
    handles.append(ax.fill_between([], [], color="#cfe3f3", label="margin ±m"))
    ax.legend(handles=handles, frameon=False, fontsize=7.5, ncols=5, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    return fig
