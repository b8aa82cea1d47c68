"""dims: the attention-dimension comparison (Table 1, Fig. 4a-b): each run's gain per d, and for runs on one
backbone the difference of gains between dimensions, clean, at σ* ("peak") and at every other σ of the sweep
("sweep": the report reads it at the dataset-relative σ*), paired on the same noisy test images."""

import itertools

import numpy as np
import pandas as pd

from gattanet.io import read_json, write_json, write_text
from gattanet.analysis.stats import effect_ci
from gattanet.analysis.sweeps import gains
from pipeline import outputs


def _load(key: str) -> dict:
    with np.load(outputs.NOISE_CORRECT.path(key)) as z:
        return {k: z[k] for k in z.files}


def work(params, key=None) -> list:
    """No model passes: it reads the noise stages' per-image results."""
    from pipeline.work import no_model

    return no_model("dims", None, "reads results (no model)")


def run(params) -> None:
    rows, gain_of = [], {}
    for key, run_cfg in params.attention.items():
        m = read_json(outputs.TRAIN_ATTN_METRICS.path(key))
        z = _load(key)
        g = gains(z["baseline"], z["gattanet"])  # (seed, σ, N)
        gain_of[key] = g
        k = list(z["sigmas"]).index(params.noise.peak_sigma)
        rows.append({"run": key, "backbone_run": run_cfg.backbone, "arch": m["arch"], "dataset": m["dataset"],
                     "attn_dim": run_cfg.attn_dim, "seeds": len(run_cfg.seeds),
                     "attention_params": m["attention_params"], "baseline_acc": float(z["baseline"][0].mean()),
                     "gattanet_acc": float(z["gattanet"][:, 0].mean()),
                     "gain": effect_ci([(1.0, g[:, 0])]).as_dict(), "peak_sigma": params.noise.peak_sigma,
                     "baseline_at_peak": float(z["baseline"][k].mean()),
                     "gattanet_at_peak": float(z["gattanet"][:, k].mean()),
                     "gain_at_peak": effect_ci([(1.0, g[:, k])]).as_dict()})
    rows.sort(key=lambda r: (r["backbone_run"], r["attn_dim"], r["run"]))
    comparisons = []
    for small, large in itertools.combinations(rows, 2):
        if small["backbone_run"] != large["backbone_run"] or small["attn_dim"] >= large["attn_dim"]:
            continue
        k = list(params.noise.sigmas).index(params.noise.peak_sigma)
        others = [("sweep", j) for j in range(1, len(params.noise.sigmas)) if j != k]  # the report picks σ*_rel
        for label, i in [("clean", 0), ("peak", k), *others]:
            # seed s of both runs starts from the same derived seed: paired per seed when the seed lists match
            paired = list(params.attention[small["run"]].seeds) == list(params.attention[large["run"]].seeds)
            est = effect_ci([(1.0, gain_of[large["run"]][:, i]), (-1.0, gain_of[small["run"]][:, i])], paired=paired)
            comparisons.append({"small": small["run"], "large": large["run"], "arch": small["arch"],
                                "dataset": small["dataset"], "d_small": small["attn_dim"],
                                "d_large": large["attn_dim"], "at": label,
                                "sigma": float(params.noise.sigmas[i]), "difference": est.as_dict()})
    write_json(outputs.DIMS.path(), outputs.DIMS.record({"rows": rows, "comparisons": comparisons}))
    table = pd.json_normalize(rows, sep="_")
    write_text(outputs.DIMS_CSV.path(), table.to_csv(index=False))
