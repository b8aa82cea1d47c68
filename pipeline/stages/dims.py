"""dims: the attention-dimension comparison (Table 1, Fig. 4a-b): each run's gain per d, and for runs on one
backbone the difference of gains between dimensions, clean, at σ* ("peak") and at every other σ of the sweep
("sweep": the report reads it at the dataset-relative σ*), paired on the same noisy test images. Every interval
is a function of the noise stages' per-image arrays (pipeline/recompute.py), from which the report recomputes them."""

import itertools

import pandas as pd

from gattanet.io import read_json, write_json, write_text
from pipeline import outputs
from pipeline.errors import MissingInputError
from pipeline.recompute import dims_difference, read_arrays, run_gain


def _load(key: str) -> dict:
    """Run `key`'s noise arrays, or MissingInputError naming the stage that writes them."""
    arrays = read_arrays(path := outputs.NOISE_CORRECT.path(key), outputs.NOISE_CORRECT.names)
    if arrays is None:
        raise MissingInputError(f"{path} is missing: run `dvc repro noise@{key}` first")
    return arrays


def work(params, key=None) -> list:
    """No model passes: it reads the noise stages' per-image results."""
    from pipeline.work import no_model

    return no_model("dims", None, "reads results (no model)")


def run(params) -> None:
    rows, arrays = [], {}
    for key, run_cfg in params.attention.items():
        m = read_json(outputs.TRAIN_ATTN_METRICS.path(key))
        z = arrays[key] = _load(key)
        k = list(z["sigmas"]).index(params.noise.peak_sigma)
        rows.append({"run": key, "backbone_run": run_cfg.backbone, "arch": m["arch"], "dataset": m["dataset"],
                     "attn_dim": run_cfg.attn_dim, "seeds": len(run_cfg.seeds),
                     "attention_params": m["attention_params"], "baseline_acc": float(z["baseline"][0].mean()),
                     "gattanet_acc": float(z["gattanet"][:, 0].mean()),
                     "gain": run_gain(z, 0.0), "peak_sigma": params.noise.peak_sigma,
                     "baseline_at_peak": float(z["baseline"][k].mean()),
                     "gattanet_at_peak": float(z["gattanet"][:, k].mean()),
                     "gain_at_peak": run_gain(z, params.noise.peak_sigma)})  # as the report recomputes them
    rows.sort(key=lambda r: (r["backbone_run"], r["attn_dim"], r["run"]))
    comparisons = []
    for small, large in itertools.combinations(rows, 2):
        if small["backbone_run"] != large["backbone_run"] or small["attn_dim"] >= large["attn_dim"]:
            continue
        k = list(params.noise.sigmas).index(params.noise.peak_sigma)
        others = [("sweep", j) for j in range(1, len(params.noise.sigmas)) if j != k]  # the report picks σ*_rel
        for label, i in [("clean", 0), ("peak", k), *others]:
            sigma = float(params.noise.sigmas[i])  # paired per seed when both runs have the same seeds
            comparisons.append({"small": small["run"], "large": large["run"], "arch": small["arch"],
                                "dataset": small["dataset"], "d_small": small["attn_dim"],
                                "d_large": large["attn_dim"], "at": label, "sigma": sigma,
                                "difference": dims_difference(arrays[small["run"]], arrays[large["run"]], sigma)})
    write_json(outputs.DIMS.path(), outputs.DIMS.record({"rows": rows, "comparisons": comparisons}))
    table = pd.json_normalize(rows, sep="_")
    write_text(outputs.DIMS_CSV.path(), table.to_csv(index=False))
