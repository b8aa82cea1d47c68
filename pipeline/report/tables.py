"""The report's tables: Table 1 beside the paper, dimensions, lesions, the related-work baselines,
deviations, compute spent.

Rows are plain dicts of display strings (and a few flags) so the template only lays them out.
"""

import math

import numpy as np
import pandas as pd

from gattanet.adapters import ram
from gattanet.adapters.addons import ADDONS
from gattanet.adapters.addons import ADDON_DEVIATIONS
from gattanet.adapters.budget import BUDGET_TOL
from gattanet.adapters.scratch import SCRATCH_DEVIATIONS
from gattanet.adapters.scratch import SCRATCH
from pipeline.config import ADDON_TRACK, SCRATCH_TRACK, BaselinesCfg, Params
from pipeline.profiles import available as available_profiles
from pipeline.stages.registry import STAGES
from gattanet.analysis.stats import Estimate

from .across import across_groups
from .across import across_spread_text
from .claims import CONTROL_LABELS, FULL_PROFILE_COMMAND, ci_text, estimate, paper_relative_gain, pct, pts
from .load import Outputs

DATASET_LABELS = {"fashion-mnist": "Fashion-MNIST", "fashion-clutter": "cluttered Fashion-MNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100",
                  "imagenet": "ImageNet-1k"}
ARCH_LABELS = {"toy": "toy model", "resnet18": "ResNet18", "resnet50": "ResNet50"}
PAPER_PROFILE_COMMAND = "gattanet-cli profile paper && dvc repro"


def count(n: int | None) -> str:
    """A parameter count as the paper prints it: 620362 -> '620.4K', 11689512 -> '11.69M'."""
    if n is None:
        return "—"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    return f"{n / 1e3:.1f}K" if n >= 1000 else str(n)


def dataset_label(name: str) -> str:
    return DATASET_LABELS.get(name, name)


def closest_paper_row(arch: str, dataset: str, dim: int, rows: list[dict]) -> dict | None:
    """The paper row with the same backbone, preferring the same dataset, then the nearest d (log scale)."""
    same_arch = [r for r in rows if r["arch"] == arch]
    pool = [r for r in same_arch if r["dataset"] == dataset] or same_arch
    if not pool:
        return None
    return min(pool, key=lambda r: min(abs(math.log(dim / d)) for d in r["attn_dims"]))


def paper_gain(row: dict) -> tuple[float | None, float | None]:
    """The paper's gain as (low, high): the stated range, or the difference of the two stated accuracies."""
    if row["gattanet_acc"] is not None:
        g = row["gattanet_acc"] - row["base_acc"]
        return g, g
    return row["gain"]["low"], row["gain"]["high"]


def compare_gain(est: Estimate, low: float | None, high: float | None) -> str:
    """Our gain's CI against the paper's point value or range."""
    if low is not None and low == high:
        return f"paper {pts(low)}: ours {'below' if est.high < low else 'above' if est.low > low else 'consistent with it'}"
    if high is not None and est.low > high:
        return "above the paper's range"
    if est.high < (low if low is not None else 0.0):  # "up to +3.5 points" still claims a gain
        return "below the paper's range"
    return "consistent with the paper's range"


def compare_relative(est: Estimate, base_acc: float, paper_rel: float | None) -> str:
    """Our gain's CI as a relative error reduction against the paper's (a new experiment's only comparison)."""
    if paper_rel is None:
        return "the paper states no gain to compare"
    low, high = (error_reduction(base_acc, g) for g in (est.low, est.high))
    where = "below" if high < paper_rel else "above" if low > paper_rel else "consistent with it"
    return f"paper {100 * paper_rel:.1f} % of the error: ours {where}"


def error_reduction(base_acc: float, gain: float) -> float:
    """The relative reduction of the error rate: gain / (1 − baseline accuracy)."""
    return gain / (1 - base_acc) if base_acc < 1 else 0.0


def table1(out: Outputs, paper: dict, relative_only: bool = False) -> dict:
    """This run's rows beside the closest paper row, and the paper rows this profile did not run. Absolute
    accuracies are compared only on the paper's own dataset; elsewhere the gains are, in points, or, for a new
    experiment (`relative_only`), only as relative error reductions."""
    prow = paper["table1"]
    rows, stand_ins = [], {}
    for key, m in out.train_attn.items():
        ref = closest_paper_row(m["arch"], m["dataset"], m["attn_dim"], prow)
        gain = estimate(out.clean_gain[key])
        rel = error_reduction(m["baseline_acc"], gain.mean)
        notes = []
        row = {"run": key, "backbone": ARCH_LABELS.get(m["arch"], m["arch"]), "dataset": dataset_label(m["dataset"]),
               "base_params": count(m["backbone_params"]), "base_acc": pct(m["baseline_acc"]),
               "attn_dim": str(m["attn_dim"]), "attn_params": count(m["attention_params"]),
               "gattanet_acc": pct(m["gattanet_acc"]), "gain": pts(gain.mean), "gain_positive": gain.mean > 0,
               "gain_ci": f"95 % CI [{pts(gain.low)}, {pts(gain.high)}], {len(m['seeds'])} seeds",
               "error_reduction": relative_text(m["baseline_acc"], gain),
               "error_reduction_short": f"{100 * rel:.1f} %", "paper": None}
        if ref is not None:
            stand_ins.setdefault(ref["id"], []).append(key)
            same = ref["dataset"] == m["dataset"]
            if not same:
                notes.append(f"dataset substituted: {dataset_label(m['dataset'])} for {ref['dataset_label']}")
            if m["attn_dim"] not in ref["attn_dims"]:
                notes.append(f"d = {m['attn_dim']} is not among the paper's d for this row")
            low, high = paper_gain(ref)
            r = paper_relative_gain(ref)
            paper_rel = (f"{100 * r:.1f} %" + ("" if low is not None and low == high else " (from the stated gain)")
                         if r is not None else "not computable (no stated gain)")
            row["paper"] = {
                "label": f"{ref['backbone']}, {ref['dataset_label']}", "base_params": ref["base_params"],
                "base_acc": pct(ref["base_acc"]), "attn_dims": ", ".join(map(str, ref["attn_dims"])),
                "attn_params": ref["attn_params"] or "not stated", "gattanet_acc": pct(ref["gattanet_acc"]),
                "gain": ref["gain"]["text"], "same_dataset": same, "error_reduction": paper_rel,
                "d_base_acc": pts(m["baseline_acc"] - ref["base_acc"]) if same else "—",
                "d_gattanet_acc": (pts(m["gattanet_acc"] - ref["gattanet_acc"])
                                   if same and ref["gattanet_acc"] is not None else "—"),
                "d_gain": (compare_relative(gain, m["baseline_acc"], r) if relative_only and not same
                           else compare_gain(gain, low, high))}
        else:
            notes.append("no paper row with this backbone")
        row["notes"] = notes
        rows.append(row)
    ran = {(m["arch"], m["dataset"]) for m in out.train_attn.values()}
    not_run = [{"label": f"{r['backbone']}, {r['dataset_label']}", "base_acc": pct(r["base_acc"]),
                "attn_dims": ", ".join(map(str, r["attn_dims"])), "gain": r["gain"]["text"],
                "command": PAPER_PROFILE_COMMAND, "stand_ins": ", ".join(stand_ins.get(r["id"], []))}
               for r in prow if (r["arch"], r["dataset"]) not in ran]
    tv = paper["torchvision_baselines"]
    torchvision = [{"backbone": r["backbone"], "paper": pct(r["base_acc"]), "torchvision": pct(tv[r["arch"]]),
                    "diff": pts(tv[r["arch"]] - r["base_acc"])}
                   for r in prow if r["arch"] in tv and r["dataset"] == "imagenet"]
    return {"rows": rows, "not_run": not_run, "torchvision": torchvision, "torchvision_source": tv["source"],
            "across": across_rows(out)}


def relative_text(base_acc: float, gain) -> str:
    """The gain on the relative scale with its CI: 'error rate −3.1 % [−0.0, −6.1] (relative, 95 % CI)'."""
    err = 1.0 - base_acc
    mean, low, high = (100 * x / err for x in (gain.mean, gain.low, gain.high))
    sign = "−" if mean >= 0 else "+"
    return (f"error rate {sign}{abs(mean):.1f} % (relative; gain/error 95 % CI [{low:+.1f} %, {high:+.1f} %] of the "
            f"baseline's {100 * err:.2f} % error)")


def across_rows(out: Outputs) -> list[dict]:
    """The clean gain across ≥ 3 backbones of one recipe (pipeline/report/across.py), the lead of Table 1."""
    rows = []
    for g in across_groups(out):
        row = {"label": g.label, "runs": ", ".join(g.runs.values()), "gain": None, "per_backbone": "",
               "interval_from": "", "missing": " && ".join(f"dvc repro noise@{k}" for k in g.missing),
               "problem": g.problem}
        if g.effect is not None:
            row.update(gain=ci_text(g.effect), interval_from=across_spread_text(g),
                       per_backbone=", ".join(f"{b} {pts(v)}" for b, v in zip(g.runs, g.effect.seed_means[0])))
        rows.append(row)
    return rows


def dims_table(out: Outputs) -> list[dict]:
    """results/dims.json rows as display rows (empty when the stage did not run)."""
    if out.dims is None:
        return []
    table = pd.json_normalize(out.dims["rows"], sep="_")
    return [{"run": r.run, "backbone": ARCH_LABELS.get(r.arch, r.arch), "dataset": dataset_label(r.dataset),
             "attn_dim": str(r.attn_dim), "seeds": str(r.seeds), "attn_params": count(int(r.attention_params)),
             "baseline": pct(r.baseline_acc), "gattanet": pct(r.gattanet_acc),
             "gain": ci_text(estimate(row["gain"])), "peak_sigma": f"{r.peak_sigma:g}",
             "baseline_at_peak": pct(r.baseline_at_peak), "gattanet_at_peak": pct(r.gattanet_at_peak),
             "gain_at_peak": ci_text(estimate(row["gain_at_peak"]))}
            for r, row in zip(table.itertuples(), out.dims["rows"])]


def dims_comparisons(out: Outputs) -> list[dict]:
    """Differences of gains between two dimensions on one backbone, with their CIs."""
    if out.dims is None:
        return []
    return [{"pair": f"{c['large']} − {c['small']}", "at": "clean" if c["at"] == "clean" else f"σ* = {c['sigma']:g}",
             "difference": ci_text(estimate(c["difference"]))} for c in out.dims.get("comparisons", [])]


def left_out(params: Params) -> list[dict]:
    """The full profile's sections this profile does not run, each with the one command that fills it."""
    runs = params.attention.values()
    checks = [
        (not any(params.backbones[r.backbone].arch == "resnet18" for r in runs), "a ResNet18 row (Table 1, all claims)"),
        (not any(r.attn_dim == 4 for r in runs), "attention dimension d = 4"),
        ("retrain" not in {les.mode for les in params.lesions.values()}, "lesions retrained per pattern (mode retrain)"),
        (any(k not in params.controls for k in params.attention),
         "the controls (more training, recalibrated heads) of every attention run"),
    ]
    if params.profile in ("full", "paper"):
        return []
    rows = [{"what": what, "command": FULL_PROFILE_COMMAND} for missing, what in checks if missing]
    if not params.baselines.methods:
        related = related_work_profiles()
        rows.append({"what": "the related-work baselines, add-on and from-scratch tracks, and the wider-backbone control",
                     "command": f"gattanet-cli profile {related[0]} && dvc repro   (likewise {', '.join(related[1:])}; "
                                "their runs here: reports/<profile>/index.html)"})
    return rows


def lesion_tables(out: Outputs) -> list[dict]:
    """One table per lesion run: each pattern's accuracy and its differences to the baseline and the full
    model, with CIs over seeds and test images."""
    tables = []
    for key, les in out.lesions.items():
        rows = [{"pattern": p["pattern"], "kind": p["kind"], "layer": "" if p.get("layer") is None else str(p["layer"]),
                 "accuracy": pct(p["accuracy"]), "vs_baseline": ci_text(estimate(p["vs_baseline"])),
                 "vs_full": ci_text(estimate(p["vs_full"]))} for p in les["patterns"]]
        tables.append({"run": key, "mode": les["mode"], "taps": ", ".join(les["taps"]), "rows": rows,
                       "seeds": len(les["seeds"])})
    return tables


def convergence(history: list[dict], patience: int) -> dict:
    """Whether a training converged by its own rule: no better validation accuracy over its last
    `patience` epochs (early stopping fired), or still improving when the epoch cap ended it."""
    epochs = len(history)
    best = max(history, key=lambda h: h["val_acc"])["epoch"] if history else 0
    converged = epochs - best >= patience
    words = (f"converged: no improvement over the last {epochs - best} epochs (patience {patience}); best "
             f"validation accuracy {pct(max(h['val_acc'] for h in history))} at epoch {best} of {epochs}"
             if converged else
             f"not converged: the best validation accuracy came at epoch {best} of {epochs}, within the last "
             f"{patience} epochs (patience), so the epoch cap, not early stopping, ended the training")
    return {"converged": converged, "best_epoch": best, "epochs": epochs, "patience": patience, "words": words}


def backbone_convergence(out: Outputs, params: Params) -> list[dict]:
    """One entry per backbone trained from scratch here: its convergence in words."""
    rows = []
    for key, history in out.pretrain_history.items():
        cfg = params.backbones[key]
        if history and cfg.patience:
            rows.append({"run": key, "epochs_cap": cfg.epochs, **convergence(history, cfg.patience)})
    return rows


def controls_tables(out: Outputs) -> list[dict]:
    """One table per controls run: GAttANet and each control, with its own gain over the baseline and
    GAttANet − control (paired per seed and image), both with CIs."""
    tables = []
    for key, res in out.controls.items():
        rows = [{"method": "GAttANet", "what": f"d = {res['attn_dim']}, the run itself", "params": f"{res['gattanet_params']:,}",
                 "accuracy": pct(res["gattanet_acc"]), "gain": ci_text(estimate(res["gattanet_gain"])), "vs": "",
                 "epochs": ""}]
        rows += [{"method": r["method"], "what": CONTROL_LABELS.get(r["method"], r["method"])
                  + (f" (rank {r['rank']})" if r.get("rank") else ""),
                  "params": f"{r['trainable_params']:,}", "accuracy": pct(r["accuracy"]),
                  "gain": ci_text(estimate(r["gain"])), "vs": ci_text(estimate(r["vs_gattanet"])),
                  "epochs": ", ".join(map(str, r["epochs_run"]))} for r in res["controls"]]
        tables.append({"run": key, "seeds": len(res["seeds"]), "images": f"{res['test_images']:,}",
                       "baseline": pct(res["baseline_acc"]), "budget": f"{res['gattanet_params']:,}",
                       "epochs": res.get("epochs"), "patience": res.get("patience"),
                       "train_subset": _subset(res["train_subset"]) if "train_subset" in res else "", "rows": rows})
    return tables


def param_values(params: dict, path: str) -> list[tuple[str, object]]:
    """(label, value) pairs at a dotted path of the params as written (Params.raw); `*` expands every key of a
    dict."""
    found: list[tuple[str, object]] = [("", params)]
    for part in path.split("."):
        nxt = []
        for label, node in found:
            if not isinstance(node, dict):
                continue
            items = node.items() if part == "*" else ([(part, node[part])] if part in node else [])
            nxt += [(f"{label}.{k}" if label else str(k), v) for k, v in items]
        found = nxt
    return found


def deviations(paper: dict, params: Params) -> list[dict]:
    """paper.yaml's deviations that apply to these params, each with the params values behind it, quoted as the
    params file writes them (Params.raw: paper.yaml names them by their dotted keys).

    An entry's `when` is {param, in: [values]} or {param, match: {key: value}} (for dicts); `new_experiment` marks one
    that makes the run a new experiment rather than a reproduction (the report's lead says which)."""
    rows = []
    for d in paper["deviations"]:
        if d.get("when") and not _applies(d["when"], params.raw):
            continue
        used = param_values(params.raw, d["param"]) if d.get("param") else []
        rows.append({"topic": d["topic"], "paper": d["paper"], "here": d["here"],
                     "params": ", ".join(f"{k} = {_show(v)}" for k, v in used),
                     "new_experiment": bool(d.get("new_experiment"))})
    return rows


def _applies(when: dict, params: dict) -> bool:
    """True when some value at when["param"] is in when["in"], or is a dict matching all of when["match"]."""
    values = [v for _, v in param_values(params, when["param"])]
    if "in" in when:
        return any(_show(v) in map(_show, when["in"]) for v in values)
    return any(isinstance(v, dict) and all(_show(v.get(k)) == _show(x) for k, x in when["match"].items())
               for v in values)


def _show(v: object) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def stage_times(out: Outputs) -> list[dict]:
    """The wall time (`seconds`), device and precision of every loaded entry of a stage the registry times
    (pipeline/stages/registry.py, `timed`), in its order: the report's compute total sums them."""
    loaded = {"pretrain": out.pretrain, "train-attn": out.train_attn, "noise": out.noise, "lesions": out.lesions,
              "embed": {k: e["stats"] for k, e in out.embedding.items()},
              "maps": {k: m["stats"] for k, m in out.maps.items()},
              "baselines": out.baselines, "controls": out.controls, "extend": out.extensions}
    return [{"stage": f"{stage.name}@{key}", "seconds": o["seconds"], "device": o.get("device"),
             "precision": o.get("precision")}
            for stage in STAGES.values() if stage.timed for key, o in loaded[stage.name].items()]


# What each baselines method is and where its code comes from (gattanet/adapters/modules.py).
BASELINE_METHODS = {
    "gattanet": ("GAttANet", "global attention agreement: one global query pooled from every tapped layer "
                 "modulates each layer by its keys' agreement with it (Eq. 1-5); conv and dense taps",
                 "this repository (gattanet/models/attention.py), α = 0 at start; retrained under the budget below"),
    "wider-toy": ("wider toy CNN", "the paper's matched-parameter control: the toy model with wider layers, "
                  "total parameters ≈ toy + GAttANet, no attention",
                  "gattanet/models/toy.py scaled by one width factor, trained from scratch like the backbone"),
}
BASELINE_METHODS.update({
    "toy-scratch": ("toy CNN (from scratch)", "the plain toy CNN retrained at each seed: the from-scratch track's "
                    "reference without attention", "gattanet/models/toy.py, trained like the backbone"),
    "gattanet-scratch": ("GAttANet (joint, from scratch)", "the toy CNN and GAttANet trained together from scratch, "
                         "every weight at the backbone's learning rate",
                         "gattanet/models/spec.py (fine-tuning mode on a fresh toy), trained like the backbone"),
})
SCRATCH_LABELS = {"sk": "Selective Kernel", "splat": "Split Attention", "condconv": "CondConv",
                  "dynconv": "Dynamic Convolution"}
BASELINE_METHODS.update({m.name: (SCRATCH_LABELS.get(m.name, m.name), m.title,
                                  f"{m.source}; in place of the toy's 3×3 convs: {m.layer_text}")
                         for m in SCRATCH.values()})
BASELINE_METHODS["ram"] = (
    "RAM", f"Recurrent Models of Visual Attention (Mnih et al., 2014): {ram.GLIMPSES} glimpses of "
    f"{ram.PATCH}×{ram.PATCH} pixels at locations a Gaussian policy (σ = {ram.LOCATION_STD}) chooses, a ReLU "
    "core network, the action after the last glimpse; trained by the hybrid loss (cross-entropy + REINFORCE "
    "with a learned baseline)", "own (gattanet/adapters/ram.py: no well-kept library has it), in place of the "
    "whole toy CNN, its sizes scaled by one factor to the toy's count")
ECA_UNMATCHABLE = ("unmatchable: ECA's only weights are one k-tap 1-D kernel per layer (k odd, ≤ 2·C − 1) "
                   "and its gate γ, far below GAttANet's budget; its real count is shown")
# The add-ons' names, papers, code sources and identity rules: the adapters' registry, the one place they are stated.
ADDON_LABELS = {"gather-excite": "Gather-Excite θ+", "non-local": "Non-local", "aa-conv": "AA-conv",
                "ran-mask": "Residual-Attention mask"}
BASELINE_METHODS.update({a.name: (ADDON_LABELS.get(a.name, a.name.upper()), a.title,
                                  f"{a.source}; identity at init: {a.identity}") for a in ADDONS.values()})


def related_work_profiles() -> list[str]:
    """The profiles that run the related work (pipeline/profiles/related-*.yaml), related-addon first."""
    return sorted((p for p in available_profiles() if p.startswith("related-")), key=lambda p: p != "related-addon")


def related_work_hint() -> str:
    """Where a profile without baselines finds them: the related-work profiles, which split the two tracks into
    runs a 2-core CPU finishes, and whose runs this repository commits under reports/<profile>/."""
    related = related_work_profiles()
    return (f"gattanet-cli profile {related[0]} && dvc repro   (the add-on track's methods at GAttANet's budget and "
            f"seeds; the related-work profiles {', '.join(related)} split the two tracks into runs of at most 2 hours "
            "on a 2-core CPU, and this repository commits each one's report under reports/<profile>/index.html; "
            f"`{FULL_PROFILE_COMMAND}` runs them all at once, for hours; or list methods under `baselines.methods` "
            "in params.yaml)")


def baselines_section(out: Outputs, params: Params, alpha: float = 0.025, holm: bool = True,
                      macs: dict[str, float | None] | None = None) -> dict:
    """The baselines comparison: rows (GAttANet first, then the attention modules by clean accuracy, then
    the wider-toy control), the methods not run with their command, the budget and the computed leaders.
    `alpha`, `holm`: the analysis plan's one-sided level and multiplicity rule for the rows' paired comparisons
    with their track's GAttANet; `macs`: multiply-adds per image per method and of "backbone" (costs.macs_per_image)."""
    cfg = params.baselines
    if not cfg.methods:
        return {"missing": related_work_hint()}
    ran = [m for m in cfg.methods if m in out.baselines]
    ran.sort(key=lambda m: (m in SCRATCH_TRACK, m not in TRACK_REFERENCES.values(), m in ("toy-scratch", "wider-toy"),
                            -_or(out.baselines[m]["clean_acc"], -1.0)))
    sigmas = sorted({out.baselines[m]["peak_sigma"] for m in ran})
    rows = [_baseline_row(m, out.baselines[m], out, len(sigmas) > 1, macs or {}) for m in ran]
    _paired_with_gattanet(rows, out, alpha, holm)
    for r in rows:
        r["track"] = "scratch" if r["method"] in SCRATCH_TRACK else "addon"
    not_run = [{"method": m, "label": _method(m)[0], "description": _method(m)[1],
                "command": f"dvc repro baselines@{m}"} for m in cfg.methods if m not in out.baselines]
    reference = out.baselines[ran[0]] if ran else None
    return {"missing": None, "rows": rows, "not_run": not_run, "budget": _budget(cfg, params),
            "left_out": methods_left_out(cfg.methods), "related_profiles": related_work_profiles(),
            "protocols": TRACK_PROTOCOLS, "deviations": method_deviations(ran), "holm": holm,
            "peak_header": f"σ = {sigmas[0]:g}" if len(sigmas) == 1 else "the peak σ (per row)",
            "backbone": None if reference is None else {
                "source": f"{ran[0]}.json", "clean": pct(reference["baseline_acc"]),
                "peak": pct(reference["baseline_at_peak"]), "macs": _macs((macs or {}).get("backbone"), None),
                "infer_rate": "—" if not reference.get("backbone_infer_img_per_s")
                else f"{reference['backbone_infer_img_per_s']:,.0f}"},
            "leaders": _leaders([(m, out.baselines[m]) for m in ran], sigmas)}


def methods_left_out(methods: list[str]) -> list[dict]:
    """Per track with a method in `methods`, the track's methods this profile does not list ({"track", "labels"})."""
    tracks = {"addon": [m for m in ADDON_TRACK if m != "gattanet"], "scratch": list(SCRATCH_TRACK)}
    return [{"track": t, "labels": [_method(m)[0] for m in ms if m not in methods]}
            for t, ms in tracks.items() if any(m in methods for m in ms) and not set(ms) <= set(methods)]


def method_deviations(methods: list[str]) -> list[dict]:
    """What the two protocols force on the methods run, as the adapters state it: each track's common
    list once, then each method's own ({"label", "items"}; methods with none left out)."""
    addons = [m for m in methods if m in ADDONS]
    convs = [m for m in methods if m in SCRATCH]
    groups = [("Every add-on module (add-on track)", ADDON_DEVIATIONS["*"] if addons else ())]
    groups += [(_method(m)[0], ADDON_DEVIATIONS.get(m, ())) for m in addons]
    groups += [("Every conv replacement (from-scratch track)", SCRATCH_DEVIATIONS["*"] if convs else ())]
    groups += [(_method(m)[0], SCRATCH_DEVIATIONS.get(m, ())) for m in convs]
    groups += [("RAM", ram.RAM_DEVIATIONS if "ram" in methods else ())]
    return [{"label": label, "items": list(items)} for label, items in groups if items]


TRACK_REFERENCES = {"addon": "gattanet", "scratch": "gattanet-scratch"}  # the GAttANet each track is paired with
TRACK_PROTOCOLS = {
    "addon": "Add-on track: the same frozen pretrained backbone; only the module trains, at GAttANet's budget, seeds "
             "and training images; each row paired with GAttANet seed by seed on the same test images.",
    "scratch": "From-scratch track: each network in the toy CNN's place, every weight trained from scratch with the "
               "backbone's protocol (its epochs cap, patience, learning rate, batch and augmentation) at the GAttANet "
               "run's seeds, at the plain toy's parameter count (widths scaled by one factor; the wider toy at toy + "
               "GAttANet's); each row paired with GAttANet trained jointly with its toy from scratch."}


def _paired_with_gattanet(rows: list[dict], out: Outputs, alpha: float, holm: bool) -> None:
    """Each row's difference from its track's GAttANet (method − GAttANet, paired per seed, on the same images) at
    σ = 0 and at the row's σ*, from both methods' per-image arrays, judged with Holm's step-down over the track's
    comparisons (every row's, clean and at σ*) where `holm`; '—' where either archive is missing."""
    from gattanet.analysis.stats import effect_ci

    from pipeline.report.extensions import WORDS, judged

    families: dict[str, list[tuple[dict, str, object]]] = {}
    for r in rows:
        ref = TRACK_REFERENCES["scratch" if r["method"] in SCRATCH_TRACK else "addon"]
        a, b = out.baseline_arrays.get(r["method"]), out.baseline_arrays.get(ref)
        r["vs_gattanet"] = r["vs_gattanet_peak"] = "—" if r["method"] != ref else "the reference"
        r["vs_verdict"] = r["vs_verdict_peak"] = r["vs_note"] = r["vs_note_peak"] = ""
        if r["method"] == ref or a is None or b is None or a["correct"].shape != b["correct"].shape \
                or not np.array_equal(a["seeds"], b["seeds"]):
            continue
        peak = list(map(float, a["sigmas"])).index(float(out.baselines[r["method"]]["peak_sigma"]))
        for i, suffix in ((0, ""), (peak, "_peak")):
            e = effect_ci([(1.0, a["correct"][:, i].astype(float)), (-1.0, b["correct"][:, i].astype(float))],
                          paired=True)
            r["vs_gattanet" + suffix] = ci_text(e)
            families.setdefault(ref, []).append((r, suffix, e))
    for ref, family in families.items():
        size = track_family_size("scratch" if ref == TRACK_REFERENCES["scratch"] else "addon")
        for (r, suffix, _), (v, note) in zip(family, judged([e for *_, e in family], alpha, holm, size)):
            r["vs_verdict" + suffix], r["vs_note" + suffix] = WORDS[v], note


def track_family_size(track: str) -> int:
    """The analysis plan's related-work family (one per track): every method of the track's whole list but its
    reference, each compared clean and at σ*, whichever profiles ran them."""
    methods = ADDON_TRACK if track == "addon" else SCRATCH_TRACK
    return 2 * len([m for m in methods if m not in TRACK_REFERENCES.values()])


def _method(m: str) -> tuple[str, str, str]:
    return BASELINE_METHODS.get(m, (m, "", ""))


def method_label(m: str) -> str:
    """A baselines method's display name: 'gather-excite' -> 'Gather-Excite θ+'."""
    return _method(m)[0]


def _or(x: float | None, default: float) -> float:
    return default if x is None else x


def _baseline_row(m: str, r: dict, out: Outputs, show_sigma: bool, macs: dict[str, float | None]) -> dict:
    label, description, source = _method(m)
    d_clean, d_peak = estimate(r["clean_gain"]), estimate(r["gain_at_peak"])
    peak = pct(r["acc_at_peak"]) + (f" (σ = {r['peak_sigma']:g})" if show_sigma else "")
    z = out.baseline_arrays.get(m)
    return {"method": m, "label": label, "description": description, "source": source,
            "trainable": count(r["trainable_params"]), "gattanet_params": count(r["gattanet_params"]),
            "budget": _budget_note(m, r, out), "clean": pct(r["clean_acc"]),
            "clean_ci": "" if z is None else _interval(accuracy_ci(z["correct"][:, 0])),
            "d_clean": ci_text(d_clean),
            "d_clean_up": d_clean.mean > 0, "peak": peak, "d_peak": ci_text(d_peak), "d_peak_up": d_peak.mean > 0,
            "train_cost": _cost(r["rel_train"]), "infer_cost": _cost(r["rel_infer"]),
            "infer_rate": "—" if not r.get("infer_img_per_s") else f"{r['infer_img_per_s']:,.0f}",
            "macs": _macs(macs.get(m), macs.get("backbone")),
            "epochs": ", ".join(map(str, r["epochs_run"])) + " (per seed)"}


def accuracy_ci(correct: np.ndarray) -> Estimate:
    """A method's test accuracy with its 95 % CI over seeds and images, from its (seed, N) correctness."""
    from gattanet.analysis.stats import effect_ci

    return effect_ci([(1.0, correct.astype(float))])


def _interval(est: Estimate) -> str:
    return f"[{pct(est.low)}, {pct(est.high)}]".replace(" %", "")  # '[90.91, 91.50]', the cell's unit stated


def _macs(n: float | None, backbone: float | None) -> str:
    """'1.23 M (1.05×)': multiply-adds per image and their ratio to the backbone's; '—' when not counted."""
    if n is None:
        return "—"
    return f"{n / 1e6:.2f} M" + (f" ({n / backbone:.2f}×)" if backbone else "")


def _budget_note(m: str, r: dict, out: Outputs) -> str:
    """How the method's parameters compare with GAttANet's budget (the wider toy: with backbone + GAttANet)."""
    if m == "gattanet":
        return "the budget itself"
    if not r["matchable"]:
        return ECA_UNMATCHABLE if m == "eca" else "unmatchable: its real count is shown"
    target, what = r["gattanet_params"], "GAttANet"
    if m == "toy-scratch":
        return "the plain toy itself, retrained"
    if m == "gattanet-scratch":
        return "the plain toy + GAttANet, trained together"
    if r["within_budget"] is None:  # the from-scratch track: matched on the whole network
        backbone = out.train_attn.get(r["run"], {}).get("backbone_params")
        plus = r["gattanet_params"] if m == "wider-toy" else 0  # the wider toy: backbone + GAttANet; others: the toy
        if backbone is None:
            return "total matched to the toy's (count not available)"
        target = backbone + plus
        what = f"backbone + GAttANet = {count(target)}" if plus else f"the plain toy's {count(target)}"
    dev = (r["trainable_params"] - target) / target
    inside = r["within_budget"] if r["within_budget"] is not None else abs(dev) <= BUDGET_TOL
    return f"{'within' if inside else 'outside'} ±{100 * BUDGET_TOL:.0f} % of {what} ({100 * dev:+.1f} %)"


def _cost(rel: float | None) -> str:
    """Throughput ratio (method ÷ backbone images/s) as a time cost per image, × the backbone's."""
    return "—" if not rel else f"{1 / rel:.2f}×"


def _epochs(n: object) -> str:
    return f"{n} epoch{'' if n == 1 else 's'}"


def _subset(n: int) -> str:
    return "all training images" if n <= 0 else f"a seeded subset of {n:,} training images"


def _budget(cfg: BaselinesCfg, params: Params) -> str:
    """The training budget of each track the profile runs, from params (the stage trains under exactly these): the
    add-on track's sentence only where an add-on is listed, the from-scratch track's only where one of it is."""
    run = params.attention[cfg.run]
    sentences = []
    if any(m not in SCRATCH_TRACK for m in cfg.methods):
        sentences.append(
            f"Every add-on method, GAttANet included, was trained under the same reduced budget: at most "
            f"{_epochs(cfg.epochs)} on {_subset(cfg.train_subset)}, with the "
            f"other settings of attention run {cfg.run} (batch {run.batch_size}, "
            f"learning rate {run.lr}, early-stopping patience {run.patience}), "
            f"on its frozen {cfg.backbone} backbone, once per training seed of that run "
            f"({len(run.seeds)} seeds).")
    if any(m in SCRATCH_TRACK for m in cfg.methods):
        bb = params.backbones[cfg.backbone]
        sentences.append(
            f"The from-scratch track (the wider toy among it) has no frozen part and is trained like the "
            f"{cfg.backbone} backbone: at most {_epochs(bb.epochs)} (patience "
            f"{bb.patience}) on {_subset(bb.train_subset)}, learning rate "
            f"{bb.lr}, batch {bb.batch_size}, once per training seed of attention run "
            f"{cfg.run} ({len(run.seeds)} seeds).")
    return " ".join(sentences)


def _leaders(results: list[tuple[str, dict]], sigmas: list[float]) -> list[str]:
    """Which method is most accurate clean and at the peak σ (by how much), and GAttANet's rank, from the files."""
    lines, checks = [], [("clean_acc", "on clean images")]
    if len(sigmas) == 1:
        checks.append(("acc_at_peak", f"at σ = {sigmas[0]:g}"))
    elif sigmas:
        lines.append("Accuracy at the peak σ is not ranked: the files were measured at different σ "
                     f"({', '.join(f'{s:g}' for s in sigmas)}).")
    for key, what in checks:
        accs = {m: r[key] for m, r in results if r[key] is not None}
        if len(accs) < 2:
            continue
        top = max(accs.values())
        best = [m for m, a in accs.items() if a == top]
        text = (f"Highest accuracy {what} of the {len(accs)} methods run: "
                f"{' and '.join(_method(m)[0] for m in best)} ({pct(top)})")
        rest = {m: a for m, a in accs.items() if a < top}
        if rest:
            second = max(rest, key=rest.get)
            text += f", {100 * (top - rest[second]):.2f} pts ahead of the next, {_method(second)[0]}"
        if "gattanet" in rest:
            rank = 1 + sum(a > accs["gattanet"] for a in accs.values())
            text += f"; GAttANet ranks {rank} ({pct(accs['gattanet'])})"
        lines.append(text + ".")
    return lines
