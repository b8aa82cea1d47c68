"""noise@KEY: accuracy vs additive Gaussian noise σ of the baseline and of every seed's GAttANet, all on
the same noisy test images (Fig. 2a, 4a-b), the gain's CI at each σ, and the growth gain(σ*) − gain(0)."""

import numpy as np
import pandas as pd

from gattanet.engine.fast_eval import shared_logits
from gattanet.io import atomic_path, write_json, write_text
from gattanet.engine.precision import autocast, autocast_dtype, precision_name
from gattanet.analysis.sweeps import gain_at, growth, sweep_correct
from pipeline.paths import RESULTS
from pipeline.runs import open_run
from pipeline.runtime import stopwatch


def run(params, key: str) -> None:
    noise = params.noise
    run_cfg, device, source, models = open_run(params, key)
    named = {str(s): m for s, m in models.items()}
    dtype = autocast_dtype(device, params.amp)

    def loader_at(sigma: float):
        return source.loader("test", noise.batch_size, sigma=sigma, noise_seed=params.seed, clip=noise.clip,
                             limit=noise.test_subset)

    with stopwatch() as clock, autocast(device, dtype):
        hits = sweep_correct(lambda x: shared_logits(named, x), loader_at, noise.sigmas)
    baseline = hits["baseline"]                                    # (σ, N)
    gattanet = np.stack([hits[str(s)] for s in run_cfg.seeds])     # (seed, σ, N)
    sigmas = list(noise.sigmas)
    gain = [gain_at(baseline, gattanet, i) for i in range(len(sigmas))]
    curve = pd.DataFrame({"sigma": sigmas, "baseline": baseline.mean(axis=1),
                          "gattanet": gattanet.mean(axis=(0, 2)), "gain": [g.mean for g in gain],
                          "ci_low": [g.low for g in gain], "ci_high": [g.high for g in gain]})
    out = RESULTS / "noise" / key
    with atomic_path(out / "correct.npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, sigmas=np.array(sigmas), seeds=np.array(run_cfg.seeds),
                            baseline=baseline, gattanet=gattanet)
    write_text(out / "curve.csv", curve.to_csv(index=False))
    grows = growth(baseline, gattanet, sigmas.index(noise.peak_sigma))
    write_json(out / "sweep.json", {
        "run": key, "arch": models[run_cfg.seeds[0]].backbone.arch, "dataset": run_cfg.dataset,
        "attn_dim": run_cfg.attn_dim, "clip": noise.clip, "seeds": list(run_cfg.seeds),
        "test_images": int(baseline.shape[1]), "sigmas": sigmas, "peak_sigma": noise.peak_sigma,
        "baseline": curve["baseline"].tolist(), "gattanet": curve["gattanet"].tolist(),
        "gattanet_per_seed": gattanet.mean(axis=2).tolist(), "gain": [g.as_dict() for g in gain],
        "growth": grows.as_dict(), "precision": precision_name(dtype),
        "seconds": clock["seconds"], "device": str(device)})
    print(f"noise {key}: gain(σ*={noise.peak_sigma:g}) − gain(0) = {100 * grows.mean:+.2f} pts "
          f"[{100 * grows.low:+.2f}, {100 * grows.high:+.2f}]")
