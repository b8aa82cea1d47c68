"""maps@KEY: agreement maps of one seeded test image per class (Fig. 3, first seed), and over the test set for
every seed whether attention enhances the true class's logit most (top-1, top-3: ranked by α·a), with its CI."""

import numpy as np
import torch

from gattanet.analysis.agreement import agreement_maps, sample_indices, true_class_hits
from gattanet.engine.fast_eval import shared_states
from gattanet.io import write_json
from gattanet.engine.precision import autocast, autocast_dtype, precision_name
from gattanet.analysis.stats import effect_ci
from pipeline.paths import RESULTS
from pipeline.runs import open_run
from pipeline.runtime import stopwatch


def run(params, key: str) -> None:
    run_cfg, device, source, models = open_run(params, key)
    model = models[run_cfg.seeds[0]]
    named = {str(s): m for s, m in models.items()}
    dtype = autocast_dtype(device, params.amp)
    with stopwatch() as clock:
        idx = sample_indices(source.labels("test"), per_class=params.maps.per_class, seed=params.seed)
        idx = idx[:params.maps.max_images]
        x, y, images = source.batch("test", idx)
        samples = agreement_maps(model, x, y, list(source.classes))
        top1, top3 = {n: [] for n in named}, {n: [] for n in named}
        with torch.no_grad(), autocast(device, dtype):
            for xb, yb in source.loader("test", limit=params.maps.test_subset).epoch(0):
                for name, state in shared_states(named, xb)[2].items():
                    h1, h3 = true_class_hits(state.scores[-1], yb, named[name].attention.alpha[-1].detach())
                    top1[name].append(h1)
                    top3[name].append(h3)
    num_classes = len(source.classes)
    hits = {k: np.stack([torch.cat(v[n]).numpy() for n in named]).astype(float) for k, v in
            (("top1", top1), ("top3", top3))}
    for sample, i, image in zip(samples, idx.tolist(), images):
        sample["index"] = i
        sample["image"] = (image * 255).round().to(torch.uint8).squeeze(0).tolist()
    out = RESULTS / "maps" / key
    write_json(out / "maps.json", {"run": key, "seed": run_cfg.seeds[0], "classes": list(source.classes),
                                   "taps": [t.as_dict() for t in model.taps],
                                   "alpha": [float(a) for a in model.attention.alpha.detach().cpu()],
                                   "samples": samples})
    stats = {"top1_rate": effect_ci([(1.0, hits["top1"])]).as_dict(),
             "top3_rate": effect_ci([(1.0, hits["top3"])]).as_dict(),
             "chance_top1": 1 / num_classes, "chance_top3": min(3, num_classes) / num_classes}
    write_json(out / "stats.json", {"run": key, "seeds": list(run_cfg.seeds), "n": int(hits["top1"].shape[1]),
                                    **stats, "precision": precision_name(dtype),
                                    "seconds": clock["seconds"], "device": str(device)})
    print(f"maps {key}: true class on top {stats['top1_rate']['mean']:.3f} (chance {stats['chance_top1']:.3f}), "
          f"in top 3 {stats['top3_rate']['mean']:.3f}")
