"""lesions@KEY: the paper's Fig. 4c patterns — none, full, one layer ablated, one layer alone — for every
training seed, on the same test images, with each pattern's difference to the baseline and to the full model.

mode `eval` switches modulation off per layer in the trained models (one shared first pass per batch);
mode `retrain` trains a new attention system per pattern and seed (same settings as the run).
"""

import numpy as np

from gattanet.engine import distributed
from gattanet.engine.evaluate import correct_batched
from gattanet.engine.fast_eval import shared_logits
from gattanet.io import write_json
from gattanet.models.lesion import ablation_patterns, full_pattern
from gattanet.engine.precision import autocast, autocast_dtype, precision_name
from gattanet.analysis.stats import effect_ci
from pipeline.config import entry
from pipeline.paths import RESULTS
from pipeline.runs import open_run
from pipeline.runtime import stopwatch
from pipeline.stages.train_attn import resume_file, train


def run(params, key: str) -> None:
    cfg = entry(params.lesions, key, "lesions")
    run_cfg, device, source, models = open_run(params, key)
    seeds = run_cfg.seeds
    taps = models[seeds[0]].taps
    patterns = ablation_patterns(taps)
    test = source.loader("test", limit=cfg.test_subset)
    dtype = autocast_dtype(device, params.amp)
    resume_names: list[str] = []
    with stopwatch() as clock:
        if cfg.mode == "eval":
            named = {str(s): m for s, m in models.items()}
            with autocast(device, dtype):
                hits = correct_batched(lambda x: shared_logits(named, x, [p["pattern"] for p in patterns]), test)
        else:
            backbone = models[seeds[0]].backbone
            retrained = {f"{s}:{full_pattern(taps)}": models[s] for s in seeds}
            for p in patterns:
                if p["kind"] in ("none", "full"):
                    continue
                resume_names.append(f"lesions-{key}-{p['pattern'].replace('.', '_')}")
                for s in seeds:
                    retrained[f"{s}:{p['pattern']}"], _ = train(
                        params, run_cfg, source, device, backbone, s, lesion=p["pattern"],
                        resume_name=resume_names[-1])
            if not distributed.training_done():
                return  # under torchrun, rank 0 alone evaluates and writes
            with autocast(device, dtype):
                hits = correct_batched(lambda x: shared_logits(retrained, x), test)
    base = hits["baseline"][:, 0].numpy().astype(float)

    def acc(pattern: str) -> np.ndarray:  # (seeds, N)
        if set(pattern) == {"."}:
            return np.tile(base, (len(seeds), 1))
        return np.stack([hits[f"{s}:{pattern}"][:, 0].numpy().astype(float) for s in seeds])

    full = acc(full_pattern(taps))
    rows = [{**p, "accuracy": float(acc(p["pattern"]).mean()),
             "per_seed": acc(p["pattern"]).mean(axis=1).tolist(),
             "vs_baseline": effect_ci([(1.0, acc(p["pattern"]) - base)]).as_dict(),
             "vs_full": effect_ci([(1.0, acc(p["pattern"]) - full)]).as_dict()} for p in patterns]
    write_json(RESULTS / "lesions" / f"{key}.json", {
        "run": key, "mode": cfg.mode, "seeds": list(seeds), "test_images": len(base),
        "taps": [t.name for t in taps], "baseline_acc": float(base.mean()), "full_acc": float(full.mean()),
        "patterns": rows, "precision": precision_name(dtype), "seconds": clock["seconds"], "device": str(device)})
    for name in resume_names:
        for s in seeds:
            resume_file(name, s).unlink(missing_ok=True)
    for r in rows:
        print(f"lesions {key} [{cfg.mode}] {r['pattern']}: {r['accuracy']:.4f}")
