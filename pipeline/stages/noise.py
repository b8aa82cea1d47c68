"""noise@KEY: accuracy vs additive Gaussian noise σ, baseline and GAttANet on the same draws (Fig. 2a, 4a-b)."""

from gattanet.evaluate import accuracies
from gattanet.io import write_csv, write_json
from gattanet.sweeps import noise_sweep
from pipeline import common
from pipeline.common import RESULTS


def run(params, key: str) -> None:
    noise = params.noise
    run_cfg, device, source, model, meta = common.open_run(params, key)
    forwards = {"baseline": model.baseline, "gattanet": model}

    def evaluate_at(sigma: float, seed: int) -> dict:
        loader = source.loader("test", noise.batch_size, sigma=sigma, noise_seed=seed, clip=noise.clip,
                               limit=noise.test_subset)
        accs = accuracies(forwards, loader)
        return {name: acc["top1"] for name, acc in accs.items()}

    with common.stopwatch() as clock:
        sweep = noise_sweep(evaluate_at, list(noise.sigmas), list(noise.seeds))
    out = RESULTS / "noise" / key
    write_json(out / "sweep.json", {"run": key, "arch": meta["arch"], "dataset": run_cfg.dataset,
                                    "attn_dim": run_cfg.attn_dim, "clip": noise.clip, **sweep,
                                    "seconds": clock["seconds"], "device": str(device)})
    rows = [{"sigma": s, "baseline": b, "gattanet": g, "diff": d, "ci_low": lo, "ci_high": hi}
            for s, b, g, d, lo, hi in zip(sweep["sigmas"], sweep["baseline"]["mean"], sweep["gattanet"]["mean"],
                                          sweep["diff"]["mean"], sweep["diff"]["ci_low"], sweep["diff"]["ci_high"])]
    write_csv(out / "curve.csv", rows, ["sigma", "baseline", "gattanet", "diff", "ci_low", "ci_high"])
    peak = sweep["peak"]
    print(f"noise {key}: peak gain {peak['diff']:+.4f} at σ = {peak['sigma']}")
