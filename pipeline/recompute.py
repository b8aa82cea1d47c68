"""The intervals of the noise, lesions and embed outputs as functions of the per-image arrays those stages also
write (git-tracked, compressed .npz): the stages compute their JSON's intervals with these functions, and the
report recomputes them with the same functions from the arrays alone (`recompute_outputs`), so a reader of the
repository can rebuild every verdict those outputs decide without rerunning a model.
"""

from pathlib import Path

import numpy as np

from gattanet.analysis.stats import effect_ci
from gattanet.analysis.sweeps import gain_at, growth


def noise_estimates(baseline: np.ndarray, gattanet: np.ndarray) -> dict:
    """sweep.json's intervals from correct.npz: baseline (σ, N), gattanet (seeds, σ, N)."""
    n = baseline.shape[0]
    return {"gain": [gain_at(baseline, gattanet, i).as_dict() for i in range(n)],
            "growth_by_sigma": [growth(baseline, gattanet, i).as_dict() for i in range(n)]}


def lesion_estimates(baseline: np.ndarray, correct: np.ndarray, full: int) -> list[dict]:
    """Per pattern, its difference to the baseline and to the full model (pattern index `full`) from KEY.npz:
    baseline (N,), correct (patterns, seeds, N)."""
    base, acc = baseline.astype(np.float64), correct.astype(np.float64)
    return [{"vs_baseline": effect_ci([(1.0, a - base)]).as_dict(),
             "vs_full": effect_ci([(1.0, a - acc[full])]).as_dict()} for a in acc]


def embed_estimates(z: dict) -> dict:
    """stats.json's intervals from correct.npz: k-NN hits (seeds, N) on q (`query`) and on each control, and the
    same on the group labels (`group_query`, `group_<control>`) where the dataset has groups."""
    def block(prefix: str) -> dict:
        q = z[f"{prefix}query"].astype(np.float64)
        controls = [k[len(prefix):] for k in z if k.startswith(prefix) and k[len(prefix):] in CONTROLS]
        hits = {c: z[prefix + c].astype(np.float64) for c in controls}
        return {"knn_query": effect_ci([(1.0, q)]).as_dict(),
                "controls": {c: {"knn": effect_ci([(1.0, h)]).as_dict(),
                                 "query_minus": effect_ci([(1.0, q), (-1.0, h)]).as_dict()} for c, h in hits.items()}}
    out = block("")
    if "group_query" in z:
        out["groups"] = block("group_")
    return out


CONTROLS = ("random", "pca")  # the embed stage's query-space controls, in the order it writes them


def _read(path: Path) -> dict | None:
    if not path.exists():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def recompute_outputs(out, params: dict) -> list[str]:
    """Replace the intervals of the loaded noise, lesions and embed outputs (pipeline.report.load.Outputs) by
    those recomputed from their arrays, and each run's clean gain by the noise arrays' at σ = 0 when the sweep
    used the whole test set (the same images and models); returns the arrays used. Outputs without arrays keep
    their JSON's."""
    res, used = Path(out.root) / "results", []
    whole = not (params.get("noise") or {}).get("test_subset")
    for key, sweep in out.noise.items():
        z = _read(path := res / "noise" / key / "correct.npz")
        if z is None:
            continue
        est = noise_estimates(z["baseline"], z["gattanet"])
        sweep["gain"], sweep["growth_by_sigma"] = est["gain"], est["growth_by_sigma"]
        sweep["growth"] = est["growth_by_sigma"][list(z["sigmas"]).index(sweep["peak_sigma"])]
        metrics = out.train_attn.get(key)
        if whole and metrics is not None and metrics.get("test_images") == z["baseline"].shape[1]:
            metrics["gain"] = est["gain"][0]
        used.append(str(path.relative_to(out.root)))
    for key, les in out.lesions.items():
        z = _read(path := res / "lesions" / f"{key}.npz")
        if z is None:
            continue
        patterns = [str(p) for p in z["patterns"]]
        full = next(i for i, p in enumerate(les["patterns"]) if p["kind"] == "full")
        for row, est in zip(les["patterns"], lesion_estimates(z["baseline"], z["correct"], full)):
            if row["pattern"] != patterns[les["patterns"].index(row)]:
                raise ValueError(f"{path}: patterns {patterns} do not match {key}.json's")
            row.update(est)
        used.append(str(path.relative_to(out.root)))
    for key, emb in out.embedding.items():
        z = _read(path := res / "embedding" / key / "correct.npz")
        if z is None:
            continue
        stats, est = emb["stats"], embed_estimates(z)
        for target, new in ((stats, est), (stats.get("groups"), est.get("groups"))):
            if target is None or new is None:
                continue
            target["knn_query"] = new["knn_query"]
            for c, e in new["controls"].items():
                target.setdefault("controls", {}).setdefault(c, {"what": c}).update(e)
        used.append(str(path.relative_to(out.root)))
    return used
