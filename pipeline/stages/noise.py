"""noise@KEY: accuracy vs additive Gaussian noise σ of the baseline and of every seed's GAttANet, all on
the same noisy test images (Fig. 2a, 4a-b), the gain's CI at each σ, and the growth gain(σ) − gain(0) at every σ:
the report reads it at the paper's σ* and at the dataset-relative σ* its analysis plan picks from the baseline's
curve and chance (gattanet.analysis.sweeps.relative_sigma)."""

import numpy as np
import pandas as pd

from gattanet.engine.fast_eval import shared_logits
from gattanet.io import atomic_path, write_json, write_text
from gattanet.engine.precision import autocast, autocast_dtype, precision_name
from gattanet.analysis.sweeps import gain_at, growth, sweep_correct
from pipeline import outputs
from pipeline.recompute import noise_estimates
from pipeline.runs import open_run
from pipeline.runtime import stopwatch


def work(params, key: str) -> list:
    """Every σ over `test_subset` test images, through one shared first pass of every seed's model."""
    from pipeline.config import entry
    from pipeline.work import Work, dataset_sizes, model_spec, num, subset_size
    from gattanet.cost.rates import Probe

    noise, run = params.noise, entry(params.attention, key, "attention")
    spec = model_spec(run.dataset, params.backbones[run.backbone].arch, "gattanet", run)
    n, seeds = subset_size(dataset_sizes(params, run.dataset).test, noise.test_subset), len(run.seeds)
    return [Work("noise", key, f"{len(noise.sigmas)} σ × {num(n)} × (1+{seeds})", len(noise.sigmas) * n,
                 Probe("shared", spec, noise.batch_size, n=seeds))]


def run(params, key: str) -> None:
    noise = params.noise
    run_cfg, device, source, models = open_run(params, key)
    named = {str(s): m for s, m in models.items()}
    dtype = autocast_dtype(device, params.amp)

    with stopwatch() as clock, autocast(device, dtype):
        hits = sweep_correct(lambda x: shared_logits(named, x), source.noisy_test(noise, noise.test_subset),
                             noise.sigmas)
    baseline = hits["baseline"]                                    # (σ, N)
    gattanet = np.stack([hits[str(s)] for s in run_cfg.seeds])     # (seed, σ, N)
    sigmas = list(noise.sigmas)
    gain = [gain_at(baseline, gattanet, i) for i in range(len(sigmas))]
    curve = pd.DataFrame({"sigma": sigmas, "baseline": baseline.mean(axis=1),
                          "gattanet": gattanet.mean(axis=(0, 2)), "gain": [g.mean for g in gain],
                          "ci_low": [g.low for g in gain], "ci_high": [g.high for g in gain]})
    with atomic_path(outputs.NOISE_CORRECT.path(key)) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, sigmas=np.array(sigmas), seeds=np.array(run_cfg.seeds),
                            baseline=baseline, gattanet=gattanet)
    write_text(outputs.NOISE_CURVE.path(key), curve[list(outputs.NOISE_CURVE.names)].to_csv(index=False))
    grows = growth(baseline, gattanet, sigmas.index(noise.peak_sigma))
    est = noise_estimates(baseline, gattanet)  # as the report recomputes them from correct.npz
    write_json(outputs.NOISE_SWEEP.path(key), outputs.NOISE_SWEEP.record({
        "run": key, "arch": models[run_cfg.seeds[0]].backbone.arch, "dataset": run_cfg.dataset,
        "attn_dim": run_cfg.attn_dim, "clip": noise.clip, "seeds": list(run_cfg.seeds),
        "test_images": int(baseline.shape[1]), "sigmas": sigmas, "peak_sigma": noise.peak_sigma,
        "baseline": curve["baseline"].tolist(), "gattanet": curve["gattanet"].tolist(),
        "gattanet_per_seed": gattanet.mean(axis=2).tolist(), "gain": est["gain"],
        "growth": grows.as_dict(), "growth_by_sigma": est["growth_by_sigma"],
        "chance": 1.0 / source.num_classes,  # the test sets here are class-balanced
        "precision": precision_name(dtype),
        "seconds": clock["seconds"], "device": str(device)}))
    print(f"noise {key}: gain(σ*={noise.peak_sigma:g}) − gain(0) = {100 * grows.mean:+.2f} pts "
          f"[{100 * grows.low:+.2f}, {100 * grows.high:+.2f}]")
