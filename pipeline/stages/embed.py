"""embed@KEY: the global query q of every test image for every seed; how well it separates classes and class
groups (k-NN accuracy per image, with its CI over seeds and images), and the 2-D UMAP of Fig. 2b (first seed).

Controls of the same dimension d, scored by the same k-NN on the same test images: per seed, an untrained attention
system's query (a random projection of the same tapped activations, averaged as Eq. 3); and the penultimate
features reduced to d by PCA fit on PCA_FIT training images. The per-image hits go to correct.npz (git-tracked)."""

import numpy as np
import pandas as pd
import torch

from gattanet.analysis.embedding import (group_labels, group_separation, knn_correct, pca_project,
                                         penultimate_tap, random_attention, umap_2d)
from gattanet.data.noise import derive_seed
from gattanet.engine.fast_eval import shared_states
from gattanet.io import atomic_path, write_json, write_text
from gattanet.engine.precision import autocast, autocast_dtype, precision_name
from pipeline import outputs
from pipeline.recompute import embed_estimates
from pipeline.runs import open_run
from pipeline.runtime import stopwatch

PCA_FIT = 10_000  # training images the PCA control is fit on (a seeded subset; all when fewer)


def work(params, key: str) -> list:
    """The test images' first pass shared by every seed's model (its queries, and the random-attention control's
    from the same activations), and the backbone over PCA_FIT training images for the PCA control; k-NN and
    UMAP are not model passes."""
    from gattanet.cost.rates import Probe
    from pipeline.config import entry
    from pipeline.work import Work, dataset_sizes, model_spec, num, seeds_text, subset_size

    run = entry(params.attention, key, "attention")
    spec = model_spec(run.dataset, params.backbones[run.backbone].arch, "gattanet", run)
    sizes, seeds, arch = dataset_sizes(params, run.dataset), len(run.seeds), params.backbones[run.backbone].arch
    n, fit = sizes.test, subset_size(sizes.train, PCA_FIT)
    return [Work("embed", key, f"{num(n)} × first pass, {seeds_text(seeds)}' queries; + k-NN, UMAP", n,
                 Probe("states", spec, params.eval_batch_size, n=seeds)),
            Work("embed", key, f"PCA control fit on {num(fit)} train images", fit,
                 Probe("eval", model_spec(run.dataset, arch), params.eval_batch_size))]


def run(params, key: str) -> None:
    cfg = params.embedding
    run_cfg, device, source, models = open_run(params, key)
    named = {str(s): m for s, m in models.items()}
    dtype = autocast_dtype(device, params.amp)
    groups = dict(source.spec.groups) or None
    taps = models[run_cfg.seeds[0]].taps
    pen = penultimate_tap(taps)
    randoms = {name: random_attention(taps, run_cfg.attn_dim, derive_seed(params.seed, int(name), 1),
                                      run_cfg.kq_norm, run_cfg.score_norm).to(device) for name in named}
    with stopwatch() as clock:
        queries, rand_q, penult, labels = {n: [] for n in named}, {n: [] for n in named}, [], []
        with torch.no_grad(), autocast(device, dtype):
            for x, y in source.loader("test").epoch(0):
                _, acts, states = shared_states(named, x)
                for name, state in states.items():
                    queries[name].append(state.query.float().cpu())
                    rand_q[name].append(randoms[name](acts, with_kq=False).query.float().cpu())
                penult.append(acts[pen].float().flatten(1).cpu())
                labels.append(y.cpu())
            backbone = models[run_cfg.seeds[0]].backbone
            fit = [backbone.run(x)[1][pen].float().flatten(1).cpu()
                   for x, _ in source.loader("train", limit=PCA_FIT).epoch(0)]
        y = torch.cat(labels).numpy()
        q = {name: torch.cat(v).numpy() for name, v in queries.items()}
        controls = {"random": {name: torch.cat(v).numpy() for name, v in rand_q.items()},
                    "pca": {"pca": pca_project(torch.cat(fit).numpy(), torch.cat(penult).numpy(), run_cfg.attn_dim,
                                               seed=params.seed)}}
        hits = np.stack([knn_correct(q[n], y, cfg.knn_k, seed=params.seed) for n in named])  # (seeds, N) bool
        ctrl_hits = {c: np.stack([knn_correct(f, y, cfg.knn_k, seed=params.seed) for f in feats.values()])
                     for c, feats in controls.items()}
        first = q[str(run_cfg.seeds[0])][:cfg.max_points]
        points = umap_2d(first, seed=params.seed, n_neighbors=cfg.n_neighbors)
        arrays = {"labels": y, "seeds": np.array(run_cfg.seeds), "query": hits, **ctrl_hits}
        if groups:
            keep, g = group_labels(y, groups)
            ghits = np.stack([knn_correct(q[n][keep], g, cfg.knn_k, seed=params.seed) for n in named])
            arrays |= {"group_keep": keep, "group_query": ghits,
                       **{f"group_{c}": np.stack([knn_correct(f[keep], g, cfg.knn_k, seed=params.seed)
                                                  for f in feats.values()]) for c, feats in controls.items()}}
        est = embed_estimates(arrays)  # as the report recomputes them from correct.npz
        what = _what(taps[pen].name, run_cfg.attn_dim)
        stats = {"knn_query": est["knn_query"], "chance": float(np.bincount(y).max() / len(y)),
                 "controls": {c: {"what": what[c], **e} for c, e in est["controls"].items()}}
        if groups:
            stats["groups"] = {"names": list(groups), "knn_query": est["groups"]["knn_query"],
                               "controls": {c: {"what": what[c], **e} for c, e in est["groups"]["controls"].items()},
                               "largest_share": float(np.bincount(g).max() / len(g)),
                               "in_2d": group_separation(points, y[:len(points)], groups, k=cfg.knn_k,
                                                         seed=params.seed)}
    with atomic_path(outputs.EMBED_CORRECT.path(key)) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    write_text(outputs.EMBED_POINTS.path(key), pd.DataFrame({"x": points[:, 0], "y": points[:, 1],
                                                 "label": y[:len(points)]}).to_csv(index=False))
    write_json(outputs.EMBED_STATS.path(key), outputs.EMBED_STATS.record({"run": key, "seeds": list(run_cfg.seeds), "test_images": len(y),
                                    "n_points": len(points), "attn_dim": run_cfg.attn_dim,
                                    "classes": list(source.classes), "knn_k": cfg.knn_k, **stats,
                                    "precision": precision_name(dtype), "seconds": clock["seconds"],
                                    "device": str(device)}))
    print(f"embed {key}: k-NN accuracy from q {stats['knn_query']['mean']:.3f} (chance {stats['chance']:.3f})")


def _what(penultimate: str, dim: int) -> dict[str, str]:
    """The controls in the report's words."""
    return {"random": f"untrained attention system, d = {dim} (a random projection of the same activations, Eq. 3)",
            "pca": f"{penultimate} features, PCA to d = {dim} (fit on {PCA_FIT:,} training images)"}
