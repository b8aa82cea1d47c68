"""TEST DATA ONLY: schema-conformant *fake* stage outputs for the report tests.

Nothing here is a result of any model. Each output is computed the way its stage computes it, from
small synthetic per-image correctness arrays with a known effect: a baseline that gets a set share of
the test images right, and per training seed a GAttANet that differs from it on a few images, with
exactly the chosen net gain. Every interval comes from gattanet.analysis.stats.effect_ci (and gattanet.analysis.sweeps)
on those arrays, so means, intervals and the accuracies beside them agree; no CI is typed by hand.
The layouts are those of pipeline/stages/*.py (and pipeline/report/load.py's *_KEYS).
"""

from pathlib import Path

import numpy as np

from gattanet.adapters.budget import within_budget
from gattanet.io import write_json, write_text
from gattanet.models.lesion import ablation_patterns, full_pattern
from gattanet.data.specs import get_spec
from gattanet.analysis.stats import effect_ci
from gattanet.analysis.sweeps import gain_at, growth
from gattanet.models.taps import Tap
from tests.helpers import ROOT
from pipeline.recompute import (controls_estimates, dims_difference, embed_estimates, lesion_estimates,
                                maps_estimates, run_gain)

SIGMAS = [0.0, 0.01, 0.02, 0.04, 0.1, 0.25]
PEAK_SIGMA = 0.04               # σ* of the fixture params: the noise claim is decided here
SEEDS = [0, 1, 2]
N_IMAGES = 4000                 # test images of every synthetic evaluation
DISCORDANT = 0.06               # share of images a seed's model gets differently from the baseline
SEED_SPREAD = 0.002             # per-seed gains are gain − 0.002, gain, gain + 0.002
TOY_TAPS = [Tap("conv1", "conv", (32, 32, 32)), Tap("conv2", "conv", (64, 16, 16)),
            Tap("conv3", "conv", (128, 8, 8)), Tap("fc1", "dense", (256,)), Tap("logits", "dense", (10,))]
RESNET_TAPS = [Tap("layer1", "conv", (64, 8, 8)), Tap("layer2", "conv", (128, 4, 4)),
               Tap("layer3", "conv", (256, 2, 2)), Tap("layer4", "conv", (512, 1, 1)),
               Tap("avgpool", "dense", (512,)), Tap("logits", "dense", (10,))]
TAPS = {"toy": TOY_TAPS, "resnet18": RESNET_TAPS}
PARAMS = {"toy": 620_362, "resnet18": 11_175_370}
BASE_ACC = {"toy": 0.85, "resnet18": 0.90}
OPTIONAL = ("noise", "lesions", "embedding", "maps", "dims", "baselines")
SHORT = {"fashion-mnist": "fmnist", "cifar10": "cifar10"}
# invented, per baselines method: (clean gain as a multiple of the run's gain, trainable params as a multiple
# of GAttANet's)
FAKE_BASELINES = {"gattanet": (1.0, 1.0), "se": (0.5, 1.04), "eca": (0.25, None), "cbam": (-0.5, 1.3),
                  "wider-toy": (0.2, None)}
# Fig. 4c as the paper describes it, as gains over the baseline in multiples of the full model's gain G
# ('.ccdd' catastrophic: below the baseline; 'cccd.' harmless; a single layer alone: no gain). A multiple of 1 is
# the full model itself, 0 the baseline itself (so equivalence holds exactly, at any margin)
LESION_GAINS = {".ccdd": -2.5, "c.cdd": 0.3, "cc.dd": 0.5, "ccc.d": 0.6, "cccd.": 1.0,
                "c....": 0.0, ".c...": 0.0, "..c..": 0.0, "...d.": 0.0, "....d": 0.0}
QUERY_KNN, GROUP_KNN, TOP1, TOP3 = 0.83, 0.95, 0.7, 0.9  # rates of the embedding and maps outputs
CONTROL_KNN = {"random": 0.6, "pca": 0.75}  # k-NN rates of the query-space controls (groups: +0.1)


def _attention(backbone: str, dataset: str, dim: int, arch: str = "toy") -> dict:
    return {"backbone": backbone, "dataset": dataset, "attn_dim": dim, "lesion": "full", "epochs": 1,
            "patience": 1, "batch_size": 128, "lr": 0.001, "l2": 1.0e-5, "dropout": 0.25,
            "kq_norm": arch != "toy", "score_norm": arch != "toy", "iterations": 1, "train_subset": 0,
            "augment": {"rotation": 20, "shift": 0.2, "hflip": True}, "seeds": list(SEEDS)}


def _backbone(arch: str, dataset: str) -> dict:
    return {"arch": arch, "dataset": dataset, "weights": "scratch", "epochs": 1, "patience": 1,
            "batch_size": 128, "lr": 0.001, "train_subset": 0,
            "augment": {"rotation": 20, "shift": 0.2, "hflip": True}}


def fake_params(dataset: str = "fashion-mnist") -> dict:
    """A params dict in params.yaml's layout (valid for pipeline.config.validate): a toy backbone on
    `dataset` with two attention runs (d = 16, 64, three seeds each), keys toy-SHORT, toy-SHORT-d16, …"""
    bb = f"toy-{SHORT[dataset]}"
    d16, d64 = f"{bb}-d16", f"{bb}-d64"
    return {
        "profile": "default", "seed": 0, "device": "cpu", "amp": True, "eval_batch_size": 512, "nproc": 1,
        "data": {dataset: {"root": "/nonexistent", "val_fraction": 0.1}},
        "backbones": {bb: _backbone("toy", dataset)},
        "attention": {d16: _attention(bb, dataset, 16), d64: _attention(bb, dataset, 64)},
        "noise": {"sigmas": SIGMAS, "peak_sigma": PEAK_SIGMA, "clip": True, "test_subset": 0, "batch_size": 500},
        "lesions": {d16: {"backbone": bb, "dataset": dataset, "mode": "eval", "test_subset": 0}},
        "embedding": {"max_points": 200, "n_neighbors": 15, "knn_k": 10},
        "maps": {"per_class": 1, "max_images": 10, "test_subset": 0},
        "baselines": {"run": d16, "backbone": bb, "dataset": dataset, "methods": list(FAKE_BASELINES),
                      "epochs": 2, "train_subset": 5000, "test_subset": 0},
        "report": {"title": "GAttANet reproduction (test fixture)",
                   "figures": {"fig2": d16, "fig4a": d16, "fig4b": d64, "fig4c": d16}},
    }


def add_resnet_run(params: dict) -> str:
    """Add a ResNet18 backbone and a d = 16 attention run on it (same dataset); return the run's key."""
    dataset = next(iter(params["data"]))
    bb = f"resnet18-{SHORT[dataset]}"
    params["backbones"][bb] = _backbone("resnet18", dataset)
    params["attention"][f"{bb}-d16"] = _attention(bb, dataset, 16, arch="resnet18")
    return f"{bb}-d16"


def add_backbones(params: dict, n: int = 3) -> list[str]:
    """Make the toy backbone one of `n` (the others pretrained from their own seeds 1 … n − 1), each with a
    d = 16 attention run; return the n d = 16 runs' keys, the fixture's own first."""
    dataset = next(iter(params["data"]))
    bb = f"toy-{SHORT[dataset]}"
    keys = [f"{bb}-d16"]
    for i in range(1, n):
        params["backbones"][f"{bb}-b{i}"] = {**_backbone("toy", dataset), "seed": i}
        params["attention"][f"{bb}-b{i}-d16"] = _attention(f"{bb}-b{i}", dataset, 16)
        keys.append(f"{bb}-b{i}-d16")
    return keys


# ---------------------------------------------------------------- synthetic per-image correctness


def _right(rng: np.random.Generator, acc: float, n: int = N_IMAGES) -> np.ndarray:
    """bool (n,): exactly round(acc · n) images right, at random places."""
    out = np.zeros(n, dtype=bool)
    out[rng.choice(n, round(acc * n), replace=False)] = True
    return out


def _flip(rng: np.random.Generator, base: np.ndarray, gain: float) -> np.ndarray:
    """A model that differs from `base` (bool (n,)) on about DISCORDANT · n images and gets exactly
    round(gain · n) more of them right."""
    n = len(base)
    net = round(gain * n)
    up = (max(round(DISCORDANT * n), abs(net)) + net) // 2
    out = base.copy()
    out[rng.choice(np.flatnonzero(~base), up, replace=False)] = True
    out[rng.choice(np.flatnonzero(base), up - net, replace=False)] = False
    return out


def _seeds(rng: np.random.Generator, base: np.ndarray, gain: float, seeds: int = len(SEEDS)) -> np.ndarray:
    """(seeds, n) float: per seed a model with gain gain + SEED_SPREAD · (−1, 0, +1, …), mean `gain`."""
    spread = SEED_SPREAD * np.linspace(-1, 1, seeds) if seeds > 1 else [0.0]
    return np.stack([_flip(rng, base, gain + s) for s in spread]).astype(float)


def noise_gain(gain: float, sigmas=SIGMAS) -> np.ndarray:
    """The fixture's gain per σ: `gain` clean, growing at moderate σ (×1.66 at σ = 0.04), gone near chance."""
    sig = np.asarray(sigmas, dtype=float)
    bump = np.exp(-((sig - 0.04) / 0.03) ** 2)
    g = gain * (1 + 2 * (bump - bump[0]))
    g[sig >= 0.25] = 0.0
    return g


def _baseline_curve(rng: np.random.Generator, acc: float, sigmas=SIGMAS) -> np.ndarray:
    """bool (σ, n): the backbone's correctness, falling from `acc` to chance (10 %) with σ."""
    return np.stack([_right(rng, 0.1 + (acc - 0.1) * np.exp(-s / 0.05)) for s in sigmas])


def _model_curve(rng: np.random.Generator, baseline: np.ndarray, gain: float, sigmas=SIGMAS) -> np.ndarray:
    """float (seeds, σ, n): every seed's correctness at every σ, with the gain profile noise_gain(gain)."""
    return np.stack([_seeds(rng, b, g) for b, g in zip(baseline, noise_gain(gain, sigmas))], axis=1)


# ---------------------------------------------------------------- outputs


def run_gains(params: dict, gain: float | dict[str, float]) -> dict[str, float]:
    """The clean gain of each attention run: a mapping as given (missing runs get 0.02), or from one number
    `gain`, gain · (1 + i) for the i-th run on each backbone (the larger d gains more, as the paper says)."""
    if isinstance(gain, dict):
        return {key: gain.get(key, 0.02) for key in params["attention"]}
    rank: dict[str, int] = {}
    out = {}
    for key, a in params["attention"].items():
        i = rank[a["backbone"]] = rank.get(a["backbone"], -1) + 1
        out[key] = gain * (1 + i)
    return out


def write_fake_outputs(root: Path, params: dict, gain: float | dict[str, float] = 0.02,
                       skip: tuple[str, ...] = (), lesion_gains: dict[str, float] | None = None,
                       control_gains: dict[str, float] | None = None) -> dict:
    """Write every stage output the params call for under root/results, from synthetic per-image data with
    the clean gains of run_gains(params, gain) (negative: GAttANet worse); sections named in `skip` (see
    OPTIONAL) are left out. `lesion_gains` overrides LESION_GAINS. `control_gains` ({method: clean gain over the
    baseline}) writes the controls output of every run under `controls:` (None: no controls output). Returns the
    per-image arrays: {"baseline": {backbone: bool (σ, N)}, "gattanet": {run: float (seeds, σ, N)}, "gains":
    {run: gain}}."""
    res = Path(root) / "results"
    rng = np.random.default_rng(0)
    per_run = run_gains(params, gain)
    sigmas = params["noise"]["sigmas"]
    peak = sigmas.index(params["noise"]["peak_sigma"])
    baseline = {key: _baseline_curve(rng, BASE_ACC[b["arch"]], sigmas) for key, b in params["backbones"].items()}
    models = {key: _model_curve(rng, baseline[a["backbone"]], per_run[key], sigmas)
              for key, a in params["attention"].items()}

    for key, b in params["backbones"].items():
        write_json(res / "pretrain" / key / "metrics.json", {
            "run": key, "arch": b["arch"], "dataset": b["dataset"], "params": PARAMS[b["arch"]],
            "val_acc": 0.86, "test_acc": float(baseline[key][0].mean()), "best_epoch": 1, "epochs_run": 1,
            "seconds": 12.5, "device": "cpu"})
    rows, noise_arrays = [], {}
    for key, a in params["attention"].items():
        arch = params["backbones"][a["backbone"]]["arch"]
        base, model = baseline[a["backbone"]], models[key]
        z = noise_arrays[key] = {"sigmas": np.array(sigmas), "seeds": np.array(a["seeds"]),
                                 "baseline": base.astype(bool), "gattanet": model.astype(bool)}
        _train_attn(res, key, a, arch, base[0], model[:, 0])
        if "noise" not in skip:
            _npz(res / "noise" / key / "correct.npz", **z)
            write_json(res / "noise" / key / "sweep.json", {
                "run": key, "arch": arch, "dataset": a["dataset"], "attn_dim": a["attn_dim"],
                "clip": params["noise"]["clip"], "seeds": a["seeds"], "test_images": N_IMAGES,
                "sigmas": list(sigmas), "peak_sigma": sigmas[peak], "baseline": base.mean(axis=1).tolist(),
                "gattanet": model.mean(axis=(0, 2)).tolist(), "gattanet_per_seed": model.mean(axis=2).tolist(),
                "gain": [gain_at(base, model, i).as_dict() for i in range(len(sigmas))],
                "growth": growth(base, model, peak).as_dict(),
                "growth_by_sigma": [growth(base, model, i).as_dict() for i in range(len(sigmas))],
                "chance": 0.1, "precision": "fp32", "seconds": 8.0,
                "device": "cpu"})
        rows.append({"run": key, "backbone_run": a["backbone"], "arch": arch, "dataset": a["dataset"],
                     "attn_dim": a["attn_dim"], "seeds": len(a["seeds"]), "attention_params": _attn_params(a),
                     "baseline_acc": float(base[0].mean()), "gattanet_acc": float(model[:, 0].mean()),
                     "gain": run_gain(z, 0.0), "peak_sigma": sigmas[peak],
                     "baseline_at_peak": float(base[peak].mean()), "gattanet_at_peak": float(model[:, peak].mean()),
                     "gain_at_peak": run_gain(z, sigmas[peak])})  # as pipeline/stages/dims.py computes them
        if "embedding" not in skip:
            _embedding(res / "embedding" / key, key, a, rng)
        if "maps" not in skip:
            _maps(res / "maps" / key, key, a, arch, rng)
    if "dims" not in skip:
        rows.sort(key=lambda r: (r["backbone_run"], r["attn_dim"], r["run"]))
        comparisons = []
        for i, small in enumerate(rows):
            for large in rows[i + 1:]:
                if small["backbone_run"] != large["backbone_run"] or small["attn_dim"] >= large["attn_dim"]:
                    continue
                others = [("sweep", j) for j in range(1, len(sigmas)) if j != peak]
                for label, k in [("clean", 0), ("peak", peak), *others]:
                    est = dims_difference(noise_arrays[small["run"]], noise_arrays[large["run"]], float(sigmas[k]))
                    comparisons.append({"small": small["run"], "large": large["run"], "arch": small["arch"],
                                        "dataset": small["dataset"], "d_small": small["attn_dim"],
                                        "d_large": large["attn_dim"], "at": label, "sigma": float(sigmas[k]),
                                        "difference": est})
        write_json(res / "dims.json", {"rows": rows, "comparisons": comparisons})
    if "lesions" not in skip:
        for key in params.get("lesions") or {}:
            a = params["attention"][key]
            _lesions(res / "lesions" / f"{key}.json", key, a, baseline[a["backbone"]][0], models[key][:, 0],
                     per_run[key], {**LESION_GAINS, **(lesion_gains or {})}, rng)
    if control_gains is not None and "controls" not in skip:
        for key in params.get("controls") or {}:
            a = params["attention"][key]
            _controls(res / "controls" / f"{key}.json", key, a, baseline[a["backbone"]][0], models[key][:, 0],
                      control_gains, rng)
    if "baselines" not in skip:
        cfg = params["baselines"]
        a = params["attention"][cfg["run"]]
        for method in cfg["methods"]:
            _baseline(res / "baselines" / f"{method}.json", method, params, baseline[a["backbone"]],
                      per_run[cfg["run"]], rng)
    return {"baseline": baseline, "gattanet": models, "gains": per_run}


def _npz(path: Path, **arrays) -> None:
    """Per-image arrays as the stages write them (compressed .npz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def _attn_params(a: dict) -> int:
    return 981 * a["attn_dim"] + 85


def _train_attn(res: Path, key: str, a: dict, arch: str, base: np.ndarray, model: np.ndarray) -> None:
    """results/train-attn/KEY/metrics.json from the clean correctness of the baseline (N,) and the seeds (S, N)."""
    taps = TAPS[arch]
    write_json(res / "train-attn" / key / "metrics.json", {
        "run": key, "backbone_run": a["backbone"], "arch": arch, "dataset": a["dataset"],
        "attn_dim": a["attn_dim"], "lesion": full_pattern(taps), "iterations": 1, "seeds": a["seeds"],
        "test_images": len(base), "backbone_params": PARAMS[arch], "attention_params": _attn_params(a),
        "baseline_acc": float(base.mean()), "baseline_top5": None, "gattanet_acc": float(model.mean()),
        "gain": effect_ci([(1.0, model - base)]).as_dict(),
        "per_seed": [{"seed": s, "gattanet_acc": float(m.mean()), "gattanet_top5": None, "val_acc": 0.86,
                      "best_epoch": 1, "epochs_run": 1, "alpha": [0.1] * len(taps)}
                     for s, m in zip(a["seeds"], model)],
        "precision": "fp32", "seconds": 30.0, "device": "cpu", "taps": [t.as_dict() for t in taps]})


def _lesions(path: Path, key: str, a: dict, base: np.ndarray, full: np.ndarray, gain: float,
             multiples: dict[str, float], rng: np.random.Generator) -> None:
    """results/lesions/KEY.json (mode eval): each pattern's models gain multiples[pattern] · G over the baseline."""
    def acc(p: dict) -> np.ndarray:
        if p["kind"] == "none":
            return np.tile(base.astype(float), (len(a["seeds"]), 1))
        if p["kind"] == "full" or multiples[p["pattern"]] == 1:
            return full
        if multiples[p["pattern"]] == 0:
            return np.tile(base.astype(float), (len(a["seeds"]), 1))
        return _seeds(rng, base, multiples[p["pattern"]] * gain, len(a["seeds"]))

    b = base.astype(float)
    patterns = ablation_patterns(TOY_TAPS)
    correct = np.stack([acc(p) for p in patterns]).astype(bool)
    ests = lesion_estimates(base, correct, [p["kind"] for p in patterns].index("full"))
    rows = [{**p, "accuracy": float(v.mean()), "per_seed": v.mean(axis=1).tolist(), **e}
            for p, v, e in zip(patterns, correct, ests)]
    _npz(path.with_suffix(".npz"), seeds=np.array(a["seeds"]), patterns=np.array([p["pattern"] for p in patterns]),
         baseline=base.astype(bool), correct=correct)
    write_json(path, {"run": key, "mode": "eval", "seeds": a["seeds"], "test_images": len(base),
                      "taps": [t.name for t in TOY_TAPS], "baseline_acc": float(b.mean()),
                      "full_acc": float(full.mean()), "patterns": rows, "precision": "fp32", "seconds": 5.0,
                      "device": "cpu"})


def _controls(path: Path, key: str, a: dict, base: np.ndarray, full: np.ndarray, control_gains: dict[str, float],
              rng: np.random.Generator) -> None:
    """results/controls/KEY.json and KEY.npz: per seed a control with the given clean gain over the baseline, on the
    same test images as the run's models `full` (seeds, N), its intervals as pipeline/stages/controls.py computes
    them."""
    correct = np.stack([_seeds(rng, base, g, len(a["seeds"])) for g in control_gains.values()]).astype(bool)
    est = controls_estimates(base, full.astype(bool), correct)
    rows = [{"method": m, "kind": "training" if m == "more-training" else "head", "trainable_params": 20, "rank": None,
             "accuracy": float(c.mean()), "per_seed": c.mean(axis=1).tolist(), **e,
             "epochs_run": [1] * len(a["seeds"]), "best_epoch": [1] * len(a["seeds"]),
             "val_acc": [0.9] * len(a["seeds"])} for m, c, e in zip(control_gains, correct, est["controls"])]
    _npz(path.with_suffix(".npz"), seeds=np.array(a["seeds"]), methods=np.array(list(control_gains)),
         baseline=base.astype(bool), gattanet=full.astype(bool), correct=correct)
    write_json(path, {
        "run": key, "backbone_run": a["backbone"], "arch": "toy", "dataset": a["dataset"], "attn_dim": a["attn_dim"],
        "seeds": a["seeds"], "test_images": len(base), "gattanet_params": _attn_params(a), "epochs": 1, "patience": 1,
        "train_subset": 0, "baseline_acc": float(base.mean()), "gattanet_acc": float(full.mean()),
        "gattanet_gain": est["gattanet_gain"], "controls": rows, "precision": "fp32", "seconds": 3.0,
        "device": "cpu"})


def _hits(rng: np.random.Generator, rate: float, seeds: int) -> np.ndarray:
    """(seeds, N) float: per seed, round(rate · N) ± a few images right."""
    spread = np.linspace(-1, 1, seeds) if seeds > 1 else [0.0]
    return np.stack([_right(rng, rate + SEED_SPREAD * j) for j in spread]).astype(float)


def _embedding(out: Path, key: str, a: dict, rng: np.random.Generator) -> None:
    spec = get_spec(a["dataset"])
    labels = np.arange(200) % 10
    xy = np.stack([np.cos(labels), np.sin(labels)], 1) * 5 + rng.normal(size=(200, 2))
    write_text(out / "points.csv", "x,y,label\n" + "".join(f"{x!r},{y!r},{c}\n" for (x, y), c in zip(xy.tolist(), labels)))
    seeds = len(a["seeds"])
    largest = max(len(c) for c in spec.groups.values()) / spec.num_classes  # labels are balanced
    arrays = {"query": _hits(rng, QUERY_KNN, seeds), "group_query": _hits(rng, GROUP_KNN, seeds)}
    for name, rate in CONTROL_KNN.items():  # the random control has one projection per seed, PCA one in all
        arrays[name] = _hits(rng, rate, seeds if name == "random" else 1)
        arrays[f"group_{name}"] = _hits(rng, min(rate + 0.1, 0.99), seeds if name == "random" else 1)
    arrays = {k: v.astype(bool) for k, v in arrays.items()}
    _npz(out / "correct.npz", **arrays)
    est = embed_estimates(arrays)  # as pipeline/stages/embed.py computes them

    def controls(block: dict) -> dict:
        return {c: {"what": c, **e} for c, e in block["controls"].items()}
    write_json(out / "stats.json", {
        "run": key, "seeds": a["seeds"], "test_images": N_IMAGES, "n_points": 200, "attn_dim": a["attn_dim"],
        "classes": list(spec.classes), "knn_k": 10,
        "knn_query": est["knn_query"], "chance": 1 / spec.num_classes, "controls": controls(est),
        "groups": {"names": list(spec.groups), "knn_query": est["groups"]["knn_query"],
                   "controls": controls(est["groups"]),
                   "largest_share": largest,
                   "in_2d": {"names": list(spec.groups), "knn_acc_2d": 0.9, "silhouette": 0.4}},
        "precision": "fp32", "seconds": 3.0, "device": "cpu"})


def _maps(out: Path, key: str, a: dict, arch: str, rng: np.random.Generator, n: int = 3) -> None:
    spec, taps = get_spec(a["dataset"]), TAPS[arch]
    samples = []
    for i in range(n):
        scores = [rng.normal(size=t.shape[1:] if t.kind == "conv" else t.shape).round(3).tolist() for t in taps]
        image = rng.integers(0, 256, size=(32, 32) if spec.channels == 1 else (3, 32, 32)).tolist()
        samples.append({"index": i, "label": i, "pred_baseline": i, "pred_gattanet": i, "image": image,
                        "scores": scores})
    write_json(out / "maps.json", {"run": key, "seed": a["seeds"][0], "classes": list(spec.classes),
                                   "taps": [t.as_dict() for t in taps], "alpha": [0.1] * len(taps),
                                   "samples": samples})
    seeds = len(a["seeds"])
    top1, top3 = _hits(rng, TOP1, seeds).astype(bool), _hits(rng, TOP3, seeds).astype(bool)
    _npz(out / "hits.npz", seeds=np.array(a["seeds"]), top1=top1, top3=top3)
    write_json(out / "stats.json", {
        "run": key, "seeds": a["seeds"], "n": N_IMAGES, **maps_estimates(top1, top3),  # as the maps stage does
        "chance_top1": 1 / spec.num_classes, "chance_top3": 3 / spec.num_classes, "precision": "fp32",
        "seconds": 2.0, "device": "cpu"})


def _baseline(path: Path, method: str, params: dict, baseline: np.ndarray, gain: float,
              rng: np.random.Generator) -> None:
    """results/baselines/METHOD.json and .npz: the run's backbone and per seed a method with a method-specific gain."""
    cfg, noise = params["baselines"], params["noise"]
    a = params["attention"][cfg["run"]]
    scale, budget = FAKE_BASELINES[method]
    acc = _model_curve(rng, baseline, gain * scale, noise["sigmas"])  # (seed, σ, N)
    k = noise["sigmas"].index(noise["peak_sigma"])
    attn = _attn_params(a)
    trainable = {"eca": 3 * 3 + 3, "wider-toy": PARAMS["toy"] + attn + 117}.get(method) or round(attn * budget)
    rel_infer, rel_train = 0.8, 1.25
    write_json(path, {
        "method": method, "run": cfg["run"], "arch": "toy", "dataset": a["dataset"],
        "width": {"gattanet": None, "wider-toy": {"widths": [33, 66, 132], "hidden": 264}}.get(method, 8),
        "seeds": a["seeds"], "test_images": N_IMAGES, "trainable_params": trainable, "gattanet_params": attn,
        "matchable": method != "eca",
        "within_budget": None if method == "wider-toy" else within_budget(trainable, attn),
        "clean_acc": float(acc[:, 0].mean()), "baseline_acc": float(baseline[0].mean()),
        "clean_gain": gain_at(baseline, acc, 0).as_dict(), "peak_sigma": noise["peak_sigma"],
        "acc_at_peak": float(acc[:, k].mean()), "baseline_at_peak": float(baseline[k].mean()),
        "gain_at_peak": gain_at(baseline, acc, k).as_dict(), "sigmas": list(noise["sigmas"]),
        "acc": acc.mean(axis=(0, 2)).tolist(), "baseline": baseline.mean(axis=1).tolist(),
        "infer_img_per_s": 800.0, "backbone_infer_img_per_s": 800.0 / rel_infer, "rel_infer": rel_infer,
        "train_img_per_s": 500.0, "backbone_train_img_per_s": 500.0 / rel_train, "rel_train": rel_train,
        "epochs_run": [cfg["epochs"]] * len(a["seeds"]), "precision": "fp32", "seconds": 20.0, "device": "cpu"})
    _npz(path.with_suffix(".npz"), sigmas=np.array(noise["sigmas"]), seeds=np.array(a["seeds"]), baseline=baseline,
         correct=acc)


# ---------------------------------------------------------------- the report over a params dict, as the stage runs it


def stage_plan():
    """The analysis plan the report stage would read here: the working directory's, else the repository's (a test
    project made by the `project` fixture has none of its own)."""
    from pipeline.report.analysis_plan import DEFAULT_PATH, load_plan

    return load_plan(DEFAULT_PATH if Path(DEFAULT_PATH).exists() else ROOT / "analysis_plan.yaml")


def loaded(params: dict, root: Path, plan=None):
    """load_outputs for a params dict, validated as a params file is, under `plan` (default: the working directory's
    analysis plan, as the report stage reads it)."""
    from pipeline.config import validate
    from pipeline.report.analysis_plan import load_plan
    from pipeline.report.load import load_outputs

    return load_outputs(validate(params), root, plan or stage_plan())


def judge(params: dict, root: Path, plan=None) -> list:
    """The claims judged over the outputs under root, as the report stage judges them (see `loaded`)."""
    from pipeline.config import validate
    from pipeline.report.claims import evaluate_claims
    from pipeline.report.load import load_paper

    plan = plan or stage_plan()
    return evaluate_claims(loaded(params, root, plan), load_paper(), validate(params), plan)


def render_report(params: dict, root: Path, out_dir: Path, provenance: dict) -> Path:
    """The report of the outputs under root written to out_dir, as the report stage writes it (see `loaded`)."""
    from pipeline.config import validate
    from pipeline.report.build import build_report

    plan = stage_plan()
    return build_report(validate(params), plan, loaded(params, root, plan), out_dir, provenance)
