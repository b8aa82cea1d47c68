"""maps@KEY: agreement maps of one seeded test image per class (Fig. 3), and over the whole test set
how often the true class has the highest (top-3) last-layer agreement score."""

from gattanet.agreement import agreement_maps, sample_indices, true_class_rank_stats
from gattanet.io import write_json
from pipeline import common
from pipeline.common import RESULTS


def run(params, key: str) -> None:
    run_cfg = common.entry(params.attention, key, "attention")
    device = common.resolve_device(params.device)
    source = common.DataSource(params, run_cfg.dataset, device)
    model, _ = common.load_run_model(params, key, device)
    test = source.splits["test"]
    with common.stopwatch() as clock:
        idx = sample_indices(test.labels, per_class=params.maps_per_class, seed=params.seed)
        chosen = test.subset(idx)
        x, y = next(iter(source_batches(chosen, device)))
        samples = agreement_maps(model, x, y, list(source.classes))
        stats = true_class_rank_stats(model, source.loader("test", 512))
    for sample, i in zip(samples, idx.tolist()):
        sample["index"] = i
        sample["image"] = test.images[i].squeeze(0).tolist()
    out = RESULTS / "maps" / key
    write_json(out / "maps.json", {"run": key, "classes": list(source.classes),
                                   "taps": [t.as_dict() for t in model.taps],
                                   "alpha": [float(a) for a in model.attention.alpha.detach().cpu()],
                                   "samples": samples})
    write_json(out / "stats.json", {"run": key, **stats, "seconds": clock["seconds"], "device": str(device)})
    print(f"maps {key}: true class on top {stats['top1_rate']:.3f} (chance {stats['chance_top1']:.3f}), "
          f"in top 3 {stats['top3_rate']:.3f}")


def source_batches(data, device):
    """All of `data` as one normalised batch."""
    from gattanet.loader import TensorLoader

    return TensorLoader(data, len(data), device=device).epoch(0)
