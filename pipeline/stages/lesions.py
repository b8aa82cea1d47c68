"""lesions@KEY: the paper's Fig. 4c patterns — none, full, one layer ablated, one layer alone — for every
training seed, on the same test images, with each pattern's difference to the baseline and to the full model,
and every pattern's per-image correctness (KEY.npz, git-tracked) from which the report recomputes them.

mode `eval` switches modulation off per layer in the trained models (one shared first pass per batch);
mode `retrain` trains a new attention system per pattern and seed (same settings as the run).
"""

import numpy as np

from gattanet.engine import distributed
from gattanet.engine.evaluate import correct_batched
from gattanet.engine.fast_eval import shared_logits
from gattanet.io import atomic_path, write_json
from gattanet.models.lesion import ablation_patterns, full_pattern
from gattanet.engine.precision import autocast, autocast_dtype, precision_name
from pipeline.config import entry
from pipeline import outputs
from pipeline.recompute import lesion_estimates
from pipeline.paths import resume_path
from pipeline.runs import open_run, train_attention
from pipeline.runtime import stopwatch


def retrained_patterns(patterns: list[dict]) -> list[dict]:
    """The patterns mode `retrain` trains new models for: all but none (the backbone) and full (the run's own)."""
    return [p for p in patterns if p["kind"] not in ("none", "full")]


def work(params, key: str) -> list:
    """`eval`: the test images through one shared first pass, then every seed's model under every pattern.
    `retrain`: each retrained pattern × seed trained as train-attn trains, then the test through all of them."""
    from gattanet.cost.rates import Probe
    from gattanet.models.registry import backbone_taps
    from pipeline.work import Work, dataset_sizes, least, model_spec, num, seeds_text, subset_size

    cfg = entry(params.lesions, key, "lesions")
    run = params.attention[key]
    s, arch, ev = dataset_sizes(params, run.dataset), params.backbones[run.backbone].arch, params.eval_batch_size
    spec, seeds, n = model_spec(run.dataset, arch, "gattanet", run), len(run.seeds), subset_size(s.test, cfg.test_subset)
    patterns = ablation_patterns(backbone_taps(arch, spec.classes, spec.channels, spec.size))
    if cfg.mode == "eval":
        return [Work("lesions", key, f"{num(n)} × (1+{seeds}×{len(patterns)})", n,
                     Probe("shared-lesions", spec, ev, n=seeds))]
    retrained, tr = len(retrained_patterns(patterns)), subset_size(s.train, run.train_subset)
    early = least(run.epochs, run.patience)
    return [Work("lesions", key, f"{retrained} patterns × {seeds_text(seeds)} × {num(tr)} × ≤{run.epochs} ep "
                 "(full pattern's rate)", retrained * seeds * tr * run.epochs,
                 Probe("train", spec, run.batch_size, l2=run.l2), least=early, sharded=True),
            Work("lesions", key, f"val {retrained} × {seeds} × {num(s.val)} × ≤{run.epochs}",
                 retrained * seeds * s.val * run.epochs, Probe("eval", spec, ev), least=early),
            Work("lesions", key, f"test {num(n)} × (1+{seeds}×{retrained + 1})", n,
                 Probe("shared-retrained", spec, ev, n=seeds))]


def run(params, key: str) -> None:
    cfg = entry(params.lesions, key, "lesions")
    run_cfg, device, source, models = open_run(params, key)
    seeds = run_cfg.seeds
    taps = models[seeds[0]].taps
    patterns = ablation_patterns(taps)
    test = source.loader("test", limit=cfg.test_subset)
    dtype = autocast_dtype(device, params.amp)
    resumes = []  # every retrained pattern's and seed's resume file
    with stopwatch() as clock:
        if cfg.mode == "eval":
            named = {str(s): m for s, m in models.items()}
            with autocast(device, dtype):
                hits = correct_batched(lambda x: shared_logits(named, x, [p["pattern"] for p in patterns]), test)
        else:
            backbone = models[seeds[0]].backbone
            retrained = {f"{s}:{full_pattern(taps)}": models[s] for s in seeds}
            for p in retrained_patterns(patterns):
                for s in seeds:
                    resumes.append(resume_path("lesions", f"{key}-{p['pattern'].replace('.', '_')}", s))
                    retrained[f"{s}:{p['pattern']}"], _ = train_attention(
                        run_cfg, source, device, backbone, s, global_seed=params.seed, amp=params.amp,
                        resume=resumes[-1], lesion=p["pattern"], stage="lesions")
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
    correct = np.stack([acc(p["pattern"]) for p in patterns]).astype(bool)  # (P, S, N)
    ests = lesion_estimates(base, correct, [p["kind"] for p in patterns].index("full"))  # as the report recomputes
    rows = [{**p, "accuracy": float(c.mean()), "per_seed": c.mean(axis=1).tolist(), **e}
            for p, c, e in zip(patterns, correct, ests)]
    with atomic_path(outputs.LESIONS_CORRECT.path(key)) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, seeds=np.array(seeds), patterns=np.array([p["pattern"] for p in patterns]),
                            baseline=base.astype(bool), correct=correct)
    write_json(outputs.LESIONS.path(key), outputs.LESIONS.record({
        "run": key, "mode": cfg.mode, "seeds": list(seeds), "test_images": len(base),
        "taps": [t.name for t in taps], "baseline_acc": float(base.mean()), "full_acc": float(full.mean()),
        "patterns": rows, "precision": precision_name(dtype), "seconds": clock["seconds"], "device": str(device)}))
    for path in resumes:
        path.unlink(missing_ok=True)
    for r in rows:
        print(f"lesions {key} [{cfg.mode}] {r['pattern']}: {r['accuracy']:.4f}")
