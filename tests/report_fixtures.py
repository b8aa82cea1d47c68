"""TEST DATA ONLY: a small, schema-conformant set of *fake* stage outputs for the report tests.

The numbers are invented (a smooth accuracy curve, a fixed gain), shaped like the outputs in
docs/ARCHITECTURE.md "Pipeline outputs"; they are not results of any model.
"""

from pathlib import Path

import numpy as np

from gattanet.adapters.budget import within_budget
from gattanet.evaluate import mcnemar_p
from gattanet.io import write_csv, write_json
from gattanet.specs import FASHION_CLASSES

SIGMAS = [0.0, 0.01, 0.02, 0.04, 0.1, 0.25]
TOY_TAPS = [{"name": "conv1", "kind": "conv", "shape": [32, 32, 32]},
            {"name": "conv2", "kind": "conv", "shape": [64, 16, 16]},
            {"name": "conv3", "kind": "conv", "shape": [128, 8, 8]},
            {"name": "fc1", "kind": "dense", "shape": [256]},
            {"name": "logits", "kind": "dense", "shape": [10]}]
OPTIONAL = ("noise", "lesions", "embedding", "maps", "dims", "baselines")
TOY_PARAMS = 620_362
# invented, per baselines method: (clean gain as a multiple of `gain`, trainable params as a multiple of GAttANet's)
FAKE_BASELINES = {"gattanet": (1.0, 1.0), "se": (0.5, 1.04), "eca": (0.25, None), "cbam": (-0.5, 1.3),
                  "wider-toy": (0.2, None)}


def fake_params() -> dict:
    """A params dict in params.yaml's layout (valid for pipeline.config.validate): two toy runs
    (d = 16, 64) on Fashion-MNIST."""
    attn = {"epochs": 1, "patience": 1, "batch_size": 128, "lr": 0.001, "l2": 1.0e-5, "dropout": 0.25,
            "kq_norm": False, "score_norm": False, "iterations": 1, "train_subset": 0, "lesion": "full",
            "augment": {"rotation": 20, "shift": 0.2, "hflip": True}}
    return {
        "profile": "default", "seed": 0, "device": "cpu", "amp": True,
        "data": {"fashion-mnist": {"root": "/nonexistent", "val_fraction": 0.1}},
        "backbones": {"toy-fmnist": {"arch": "toy", "dataset": "fashion-mnist", "weights": "scratch", "epochs": 1,
                                     "patience": 1, "batch_size": 128, "lr": 0.001, "train_subset": 0,
                                     "augment": {"rotation": 20, "shift": 0.2, "hflip": True}}},
        "attention": {"toy-fmnist-d16": {"backbone": "toy-fmnist", "dataset": "fashion-mnist", "attn_dim": 16, **attn},
                      "toy-fmnist-d64": {"backbone": "toy-fmnist", "dataset": "fashion-mnist", "attn_dim": 64, **attn}},
        "noise": {"sigmas": SIGMAS, "seeds": [0, 1], "clip": True, "test_subset": 0, "batch_size": 500},
        "lesions": {"toy-fmnist-d16": {"backbone": "toy-fmnist", "dataset": "fashion-mnist", "mode": "eval", "test_subset": 0}},
        "embedding": {"max_points": 200, "n_neighbors": 15, "knn_k": 10},
        "maps": {"per_class": 1, "max_images": 10, "test_subset": 0},
        "baselines": {"run": "toy-fmnist-d16", "backbone": "toy-fmnist", "dataset": "fashion-mnist",
                      "methods": list(FAKE_BASELINES), "epochs": 2, "train_subset": 5000, "test_subset": 1000,
                      "peak_sigma": 0.035},
        "report": {"title": "GAttANet reproduction (test fixture)",
                   "figures": {"fig2": "toy-fmnist-d16", "fig4a": "toy-fmnist-d16", "fig4b": "toy-fmnist-d64",
                               "fig4c": "toy-fmnist-d16"}},
    }


def write_fake_outputs(root: Path, params: dict, gain: float = 0.02, skip: tuple[str, ...] = ()) -> None:
    """Write fake outputs for every run in `params` under root; `gain` is GAttANet − baseline on clean
    images (negative: GAttANet worse); sections named in `skip` (see OPTIONAL) are left out."""
    root = Path(root)
    res = root / "results"
    for key, b in params["backbones"].items():
        write_json(res / "pretrain" / key / "metrics.json", {
            "run": key, "arch": b["arch"], "dataset": b["dataset"], "params": TOY_PARAMS, "val_acc": 0.86,
            "test_acc": 0.85, "best_epoch": 1, "epochs_run": 1, "seconds": 12.5, "device": "cpu"})
    dims = []
    for i, (key, a) in enumerate(params["attention"].items()):
        g = gain * (1 + i)  # the larger d gains more, as the paper says
        base = 0.85
        write_json(res / "train-attn" / key / "metrics.json", {
            "run": key, "backbone_run": a["backbone"], "arch": "toy", "dataset": "fashion-mnist",
            "attn_dim": a["attn_dim"], "lesion": "cccdd", "backbone_params": TOY_PARAMS,
            "attention_params": 981 * a["attn_dim"] + 85, "baseline_acc": base, "gattanet_acc": base + g,
            "val_acc": base + g, "best_epoch": 1, "epochs_run": 1, "seconds": 30.0, "device": "cpu",
            "alpha": [0.1] * 5, "taps": [t["name"] for t in TOY_TAPS], "paired_test": _paired(g)})
        sweep = _sweep(key, a["attn_dim"], g, params["noise"])
        if "noise" not in skip:
            write_json(res / "noise" / key / "sweep.json", sweep)
        peak = sweep["sigmas"].index(sweep["peak"]["sigma"])
        dims.append({"run": key, "backbone_run": a["backbone"], "arch": "toy", "dataset": "fashion-mnist",
                     "attn_dim": a["attn_dim"], "attention_params": 981 * a["attn_dim"] + 85, "baseline_acc": base,
                     "gattanet_acc": base + g, "peak_sigma": sweep["peak"]["sigma"],
                     "baseline_at_peak": sweep["baseline"]["mean"][peak],
                     "gattanet_at_peak": sweep["gattanet"]["mean"][peak]})
    if "dims" not in skip:
        write_json(res / "dims.json", {"rows": dims})
    for key in params.get("lesions", {}) if "lesions" not in skip else ():
        write_json(res / "lesions" / f"{key}.json", _lesions(key, gain))
    for key in params["attention"] if "embedding" not in skip else ():
        _embedding(res / "embedding" / key, key)
    for key in params["attention"] if "maps" not in skip else ():
        _maps(res / "maps" / key, key)
    for method in params["baselines"]["methods"] if "baselines" not in skip else ():
        write_json(res / "baselines" / f"{method}.json", _baseline(method, params, gain))


def _paired(gain: float, n: int = 10_000, discordant: int = 1_000) -> dict:
    """A McNemar result on n test images for a clean gain (|gain| ≤ 0.1): 1,000 images only one model gets right."""
    diff = round(gain * n)
    return {"test": "exact McNemar, top-1", "n": n, "gattanet_only": (discordant + diff) // 2,
            "baseline_only": (discordant - diff) // 2, "p_value": mcnemar_p((discordant + diff) // 2,
                                                                             (discordant - diff) // 2)}


def _sweep(key: str, dim: int, gain: float, noise: dict) -> dict:
    sig = np.asarray(noise["sigmas"])
    base = 0.1 + 0.75 * np.exp(-sig / 0.05)                       # falls from 85 % to chance (10 %)
    bump = np.exp(-((sig - 0.04) / 0.03) ** 2)
    diff = gain * (1 + 2 * (bump - bump[0]))                      # grows at moderate σ ...
    diff[sig >= 0.25] = -0.002                                    # ... and vanishes near chance
    seeds = noise["seeds"]
    per_seed = {"baseline": [base.tolist() for _ in seeds], "gattanet": [(base + diff).tolist() for _ in seeds]}
    peak = int(np.argmax(diff))
    return {"run": key, "arch": "toy", "dataset": "fashion-mnist", "attn_dim": dim, "clip": noise["clip"],
            "sigmas": sig.tolist(), "seeds": seeds,
            "baseline": {"mean": base.tolist(), "per_seed": per_seed["baseline"]},
            "gattanet": {"mean": (base + diff).tolist(), "per_seed": per_seed["gattanet"]},
            "diff": {"mean": diff.tolist(), "ci_low": (diff - 0.004).tolist(), "ci_high": (diff + 0.004).tolist()},
            "peak": {"sigma": float(sig[peak]), "diff": float(diff[peak])}, "negative_from": 0.25,
            "seconds": 8.0, "device": "cpu"}


def _baseline(method: str, params: dict, gain: float) -> dict:
    """results/baselines/METHOD.json: the fixture's backbone noise curve plus a method-specific gain."""
    cfg = params["baselines"]
    scale, budget = FAKE_BASELINES[method]
    sweep = _sweep(cfg["run"], 16, gain * scale, params["noise"])
    sig = sweep["sigmas"]
    peak = min(range(len(sig)), key=lambda i: abs(sig[i] - cfg["peak_sigma"]))
    attn = 981 * 16 + 85
    trainable = {"eca": 3 * 3 + 3, "wider-toy": TOY_PARAMS + attn + 117}.get(method) or round(attn * budget)
    acc, base = sweep["gattanet"]["mean"], sweep["baseline"]["mean"]
    return {"method": method, "run": cfg["run"], "arch": "toy", "dataset": "fashion-mnist",
            "width": {"gattanet": None, "wider-toy": {"widths": [33, 66, 132], "hidden": 264}}.get(method, 8), "trainable_params": trainable, "gattanet_params": attn,
            "matchable": method != "eca",
            "within_budget": None if method == "wider-toy" else within_budget(trainable, attn),
            "clean_acc": acc[0], "baseline_acc": base[0], "peak_sigma": sig[peak], "acc_at_peak": acc[peak],
            "baseline_at_peak": base[peak], "sigmas": sig, "acc": acc, "baseline": base,
            "infer_img_per_s": 800.0, "backbone_infer_img_per_s": 1000.0, "rel_infer": 0.8,
            "train_img_per_s": 500.0, "backbone_train_img_per_s": 400.0, "rel_train": 1.25,
            "epochs_run": cfg["epochs"], "best_epoch": cfg["epochs"], "seconds": 20.0, "device": "cpu"}


def _lesions(key: str, gain: float) -> dict:
    """Fig. 4c as the paper describes it: '.ccdd' catastrophic, 'cccd.' harmless, single layers no gain."""
    base, full = 0.85, 0.85 + gain
    ablate = [".ccdd", "c.cdd", "cc.dd", "ccc.d", "cccd."]
    ablate_acc = [base - 0.05, base + 0.3 * gain, base + 0.5 * gain, base + 0.6 * gain, full - 0.1 * gain]
    patterns = [{"pattern": ".....", "kind": "none", "layer": None, "accuracy": base},
                {"pattern": "cccdd", "kind": "full", "layer": None, "accuracy": full}]
    patterns += [{"pattern": p, "kind": "ablate", "layer": t["name"], "accuracy": a}
                 for p, a, t in zip(ablate, ablate_acc, TOY_TAPS)]
    patterns += [{"pattern": "." * i + "cccdd"[i] + "." * (4 - i), "kind": "alone", "layer": t["name"],
                  "accuracy": base + 0.1 * gain} for i, t in enumerate(TOY_TAPS)]
    return {"run": key, "mode": "eval", "taps": [t["name"] for t in TOY_TAPS], "baseline_acc": base,
            "full_acc": full, "patterns": patterns, "seconds": 5.0, "device": "cpu"}


def _embedding(out: Path, key: str) -> None:
    rng = np.random.default_rng(0)
    labels = np.arange(200) % 10
    xy = np.stack([np.cos(labels), np.sin(labels)], 1) * 5 + rng.normal(size=(200, 2))
    write_csv(out / "points.csv", [{"x": float(x), "y": float(y), "label": int(c)} for (x, y), c in zip(xy, labels)],
              ["x", "y", "label"])
    write_json(out / "stats.json", {
        "run": key, "n_points": 200, "attn_dim": 16, "classes": list(FASHION_CLASSES), "knn_k": 10,
        "knn_acc_query": 0.83, "knn_acc_2d": 0.80, "chance": 0.1,
        "groups": {"names": ["clothing", "footwear", "bags"], "knn_acc_2d": 0.95, "silhouette": 0.4},
        "seconds": 3.0, "device": "cpu"})


def _maps(out: Path, key: str, n: int = 3) -> None:
    rng = np.random.default_rng(1)
    samples = []
    for i in range(n):
        scores = [rng.normal(size=t["shape"][1:]).round(3).tolist() if t["kind"] == "conv"
                  else rng.normal(size=t["shape"]).round(3).tolist() for t in TOY_TAPS]
        samples.append({"index": i, "label": i, "pred_baseline": i, "pred_gattanet": i,
                        "image": rng.integers(0, 256, size=(32, 32)).tolist(), "scores": scores})
    write_json(out / "maps.json", {"run": key, "classes": list(FASHION_CLASSES), "taps": TOY_TAPS,
                                   "alpha": [0.1] * 5, "samples": samples})
    write_json(out / "stats.json", {"run": key, "n": 1000, "top1_rate": 0.7, "top3_rate": 0.9,
                                    "chance_top1": 0.1, "chance_top3": 0.3, "seconds": 2.0, "device": "cpu"})
