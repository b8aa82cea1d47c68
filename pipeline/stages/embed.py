"""embed@KEY: the global query q of test images, its 2-D UMAP and how well it separates classes (Fig. 2b)."""

from gattanet.embedding import collect_queries, embedding_stats, umap_2d
from gattanet.io import write_csv, write_json
from pipeline import common
from pipeline.common import RESULTS


def run(params, key: str) -> None:
    cfg = params.embedding
    run_cfg, device, source, model, _ = common.open_run(params, key)
    with common.stopwatch() as clock:
        queries, labels = collect_queries(model, source.loader("test", 512, limit=cfg.max_points))
        points = umap_2d(queries, seed=params.seed, n_neighbors=cfg.n_neighbors)
        stats = embedding_stats(queries, points, labels, list(source.classes), dict(source.spec.groups), cfg.knn_k)
    out = RESULTS / "embedding" / key
    write_csv(out / "points.csv", [{"x": float(x), "y": float(y), "label": int(lab)}
                                   for (x, y), lab in zip(points, labels)], ["x", "y", "label"])
    write_json(out / "stats.json", {"run": key, **stats, "seconds": clock["seconds"], "device": str(device)})
    print(f"embed {key}: k-NN accuracy from q {stats['knn_acc_query']:.3f}, in 2-D {stats['knn_acc_2d']:.3f} "
          f"(chance {stats['chance']:.3f})")
