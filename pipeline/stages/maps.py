"""maps@KEY: agreement maps of one seeded test image per class (Fig. 3, first seed), and over the test set for
every seed whether attention enhances the true class's logit most (top-1, top-3: ranked by α·a), with its CI;
those per-image hits go to hits.npz (git-tracked), from which the report recomputes the rates. On the cluttered
set, also where the conv taps' gain lies: the item's pixels against the clutter's and the background's (AUCs)."""

import numpy as np
import torch

from gattanet.analysis.agreement import (agreement_maps, sample_indices, true_class_hit_table, where_estimates,
                                         where_gain_lies)
from gattanet.io import atomic_path, write_json
from gattanet.engine.precision import autocast, autocast_dtype, precision_name
from pipeline import outputs
from pipeline.recompute import maps_estimates
from pipeline.runs import open_run
from pipeline.runtime import stopwatch


def work(params, key: str) -> list:
    """`test_subset` test images' first pass shared by every seed's model (their scores); the sample images
    through the first seed's GAttANet and its backbone (their maps and predictions)."""
    from gattanet.cost.rates import Probe
    from pipeline.config import entry
    from pipeline.work import Work, dataset_sizes, model_spec, num, seeds_text, subset_size

    run = entry(params.attention, key, "attention")
    spec = model_spec(run.dataset, params.backbones[run.backbone].arch, "gattanet", run)
    seeds, n = len(run.seeds), subset_size(dataset_sizes(params, run.dataset).test, params.maps.test_subset)
    samples = min(params.maps.per_class * spec.classes, params.maps.max_images)  # sample_indices, cut as run cuts
    return [Work("maps", key, f"{num(n)} × first pass, {seeds_text(seeds)}' scores", n,
                 Probe("states", spec, params.eval_batch_size, n=seeds)),
            Work("maps", key, f"{samples} sample maps (GAttANet and baseline)", samples, Probe("eval", spec, samples)),
            Work("maps", key, "", samples, Probe("eval", model_spec(run.dataset, spec.arch), samples))]


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
        with autocast(device, dtype):
            table = true_class_hit_table(named, source.loader("test", limit=params.maps.test_subset))
            where = cluttered_where(params, run_cfg.dataset, source, named)
    num_classes = len(source.classes)
    boxes = item_boxes(params, run_cfg.dataset, source)
    for sample, i, image in zip(samples, idx.tolist(), images):
        sample["index"] = i
        sample["image"] = (image * 255).round().to(torch.uint8).squeeze(0).tolist()
        if boxes is not None:
            sample["item_box"] = boxes[i]
    write_json(outputs.MAPS.path(key), outputs.MAPS.record({"run": key, "seed": run_cfg.seeds[0], "classes": list(source.classes),
                                   "taps": [t.as_dict() for t in model.taps],
                                   "alpha": [float(a) for a in model.attention.alpha.detach().cpu()],
                                   "samples": samples}))
    with atomic_path(outputs.MAPS_HITS.path(key)) as tmp, open(tmp, "wb") as f:  # rows in the order of `named`
        np.savez_compressed(f, seeds=np.array([int(s) for s in named]), top1=table["top1"], top3=table["top3"])
    stats = {**maps_estimates(table["top1"], table["top3"]),  # as the report recomputes them from hits.npz
             "chance_top1": 1 / num_classes, "chance_top3": min(3, num_classes) / num_classes}
    write_json(outputs.MAPS_STATS.path(key), outputs.MAPS_STATS.record({"run": key, "seeds": list(run_cfg.seeds), "n": int(table["top1"].shape[1]),
                                    **stats, **({"where": where} if where else {}), "precision": precision_name(dtype),
                                    "seconds": clock["seconds"], "device": str(device)}))
    for t, tap in enumerate(where["taps"] if where else []):
        print(f"maps {key}: {tap} gain, item over clutter AUC {where['item_vs_clutter']['auc'][t]['mean']:.3f}, "
              f"item over background {where['item_vs_background']['auc'][t]['mean']:.3f}")
    print(f"maps {key}: true class on top {stats['top1_rate']['mean']:.3f} (chance {stats['chance_top1']:.3f}), "
          f"in top 3 {stats['top3_rate']['mean']:.3f}")


def cluttered_where(params, dataset: str, source, models: dict) -> dict | None:
    """On the cluttered set, where_gain_lies over every test image: does the gain single out the item's pixels
    over the clutter's and over the background's? None on any other dataset."""
    from gattanet.data.clutter import BACKGROUND, CLUTTER, ITEM, NAME, ClutterSettings, regions
    from gattanet.data.datasets import load_tensors
    from pipeline.paths import data_path

    if dataset != NAME:
        return None
    settings = params.data[dataset].clutter or ClutterSettings()
    made_with = load_tensors(data_path(dataset))["meta"].get("source", {}).get("clutter")
    if made_with != settings.as_dict():
        raise ValueError(f"{data_path(dataset)} was generated with {made_with}, params say {settings.as_dict()}: "
                         f"rerun `dvc repro data@{dataset}`")
    labels = regions(source.splits["test"].images.numpy(), settings, "test")
    table = where_gain_lies(models, source.loader("test"), labels, ITEM, {"item_vs_clutter": CLUTTER,
                                                                         "item_vs_background": BACKGROUND})
    return where_estimates(table)


def item_boxes(params, dataset: str, source) -> list | None:
    """On the cluttered set, each test image's item square [row, column, side] (the generator's layout), for
    Fig. 3's outlines; None on any other dataset."""
    from gattanet.data.clutter import NAME, ClutterSettings, layout

    if dataset != NAME:
        return None
    settings = params.data[dataset].clutter or ClutterSettings()
    item_at = layout(settings, "test", len(source.splits["test"]))[0]
    return [[int(r), int(c), settings.item_size] for r, c in item_at]
