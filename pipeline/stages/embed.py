"""embed@KEY: the global query q of every test image for every seed; how well it separates classes and class
groups (k-NN accuracy per image, with its CI over seeds and images), and the 2-D UMAP of Fig. 2b (first seed)."""

import numpy as np
import pandas as pd
import torch

from gattanet.analysis.embedding import group_labels, group_separation, knn_correct, umap_2d
from gattanet.engine.fast_eval import shared_states
from gattanet.io import write_json, write_text
from gattanet.engine.precision import autocast, autocast_dtype, precision_name
from gattanet.analysis.stats import effect_ci
from pipeline.paths import RESULTS
from pipeline.runs import open_run
from pipeline.runtime import stopwatch


def run(params, key: str) -> None:
    cfg = params.embedding
    run_cfg, device, source, models = open_run(params, key)
    named = {str(s): m for s, m in models.items()}
    dtype = autocast_dtype(device, params.amp)
    groups = dict(source.spec.groups) or None
    with stopwatch() as clock:
        queries, labels = {name: [] for name in named}, []
        with torch.no_grad(), autocast(device, dtype):
            for x, y in source.loader("test").epoch(0):
                for name, state in shared_states(named, x)[2].items():
                    queries[name].append(state.query.float().cpu())
                labels.append(y.cpu())
        y = torch.cat(labels).numpy()
        q = {name: torch.cat(v).numpy() for name, v in queries.items()}
        hits = np.stack([knn_correct(q[n], y, cfg.knn_k, seed=params.seed) for n in named]).astype(float)
        first = q[str(run_cfg.seeds[0])][:cfg.max_points]
        points = umap_2d(first, seed=params.seed, n_neighbors=cfg.n_neighbors)
        stats = {"knn_query": effect_ci([(1.0, hits)]).as_dict(),
                 "chance": float(np.bincount(y).max() / len(y))}
        if groups:
            keep, g = group_labels(y, groups)
            ghits = np.stack([knn_correct(q[n][keep], g, cfg.knn_k, seed=params.seed) for n in named]).astype(float)
            stats["groups"] = {"names": list(groups), "knn_query": effect_ci([(1.0, ghits)]).as_dict(),
                               "largest_share": float(np.bincount(g).max() / len(g)),
                               "in_2d": group_separation(points, y[:len(points)], groups, k=cfg.knn_k,
                                                         seed=params.seed)}
    out = RESULTS / "embedding" / key
    write_text(out / "points.csv", pd.DataFrame({"x": points[:, 0], "y": points[:, 1],
                                                 "label": y[:len(points)]}).to_csv(index=False))
    write_json(out / "stats.json", {"run": key, "seeds": list(run_cfg.seeds), "test_images": len(y),
                                    "n_points": len(points), "attn_dim": run_cfg.attn_dim,
                                    "classes": list(source.classes), "knn_k": cfg.knn_k, **stats,
                                    "precision": precision_name(dtype), "seconds": clock["seconds"],
                                    "device": str(device)})
    print(f"embed {key}: k-NN accuracy from q {stats['knn_query']['mean']:.3f} (chance {stats['chance']:.3f})")
