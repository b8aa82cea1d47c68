"""maps@KEY: agreement maps of one seeded test image per class (Fig. 3), and over the whole test set
how often the true class has the highest (top-3) last-layer agreement score."""

import torch

from gattanet.agreement import agreement_maps, sample_indices, true_class_rank_stats
from gattanet.io import write_json
from pipeline import common
from pipeline.common import RESULTS


def run(params, key: str) -> None:
    run_cfg, device, source, model, _ = common.open_run(params, key)
    with common.stopwatch() as clock:
        idx = sample_indices(source.labels("test"), per_class=params.maps_per_class, seed=params.seed)
        idx = idx[:params.maps_max_images]
        x, y, images = source.batch("test", idx)
        samples = agreement_maps(model, x, y, list(source.classes))
        stats = true_class_rank_stats(model, source.loader("test", 512, limit=params.maps_test_subset))
    for sample, i, image in zip(samples, idx.tolist(), images):
        sample["index"] = i
        sample["image"] = (image * 255).round().to(torch.uint8).squeeze(0).tolist()
    out = RESULTS / "maps" / key
    write_json(out / "maps.json", {"run": key, "classes": list(source.classes),
                                   "taps": [t.as_dict() for t in model.taps],
                                   "alpha": [float(a) for a in model.attention.alpha.detach().cpu()],
                                   "samples": samples})
    write_json(out / "stats.json", {"run": key, **stats, "seconds": clock["seconds"], "device": str(device)})
    print(f"maps {key}: true class on top {stats['top1_rate']:.3f} (chance {stats['chance_top1']:.3f}), "
          f"in top 3 {stats['top3_rate']:.3f}")

