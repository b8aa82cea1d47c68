"""Noise sweeps (Figures 2a, 4a/4b): accuracy of baseline and GAttANet vs input-noise σ over noise seeds.

The caller supplies `evaluate_at(sigma, seed)`, which evaluates both models on the *same* noisy
batches; this module only loops, aggregates over seeds, and finds where the gain peaks.
"""

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

MODELS = ("baseline", "gattanet")


def default_sigmas() -> list[float]:
    """σ = 0 plus a log grid over 0.01-0.25 (the paper's Fig. 2a axis), refined over 0.03-0.05.

    Construction: 8 log-spaced points from 0.01 to 0.25 (ratio ≈1.58 between neighbours), of
    which those inside [0.03, 0.05] are replaced by 5 log-spaced points from 0.03 to 0.05
    (ratio ≈1.14), where the paper's gain peaks; values rounded to 4 decimals.
    """
    coarse = [s for s in np.geomspace(0.01, 0.25, 8) if not 0.03 <= s <= 0.05]
    fine = list(np.geomspace(0.03, 0.05, 5))
    return [0.0] + sorted(round(float(s), 4) for s in coarse + fine)


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval of the mean. With one value the interval is the value."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"mean_ci needs a non-empty 1-D list of values, got shape {v.shape}")
    mean = float(v.mean())
    if v.size == 1:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, df=v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half


def noise_sweep(evaluate_at: Callable[[float, int], dict], sigmas: Sequence[float],
                seeds: Sequence[int]) -> dict:
    """Evaluate both models at every (σ, noise seed); aggregate means, the gain's 95 % CI and its peak.

    `evaluate_at(sigma, seed)` returns `{"baseline": acc, "gattanet": acc}`. σ must be strictly
    increasing and ≥ 0. σ = 0 draws no noise, so it is evaluated once (first seed) and its
    result repeated for every seed. `per_seed[s][i]` is the accuracy for seeds[s] at sigmas[i];
    `diff` = gattanet − baseline per seed, its CI over seeds by Student t (the value itself when
    there is one seed). `peak` is the σ of the largest mean gain (σ = 0 included, first on ties);
    `negative_from` is the first σ after the peak whose mean gain is < 0, or None.
    """
    sigmas = [float(s) for s in sigmas]
    seeds = [int(s) for s in seeds]
    _validate(sigmas, seeds)

    acc = {m: np.zeros((len(seeds), len(sigmas))) for m in MODELS}  # [seed, sigma]
    for i, sigma in enumerate(sigmas):
        for s, seed in enumerate(seeds):
            if sigma == 0.0 and s > 0:
                for m in MODELS:
                    acc[m][s, i] = acc[m][0, i]
                continue
            result = evaluate_at(sigma, seed)
            for m in MODELS:
                if m not in result:
                    raise ValueError(f"evaluate_at({sigma}, {seed}) returned keys {sorted(result)}; "
                                     f"it must return {list(MODELS)}")
                acc[m][s, i] = float(result[m])

    diff = acc["gattanet"] - acc["baseline"]
    ci = [mean_ci(diff[:, i]) for i in range(len(sigmas))]
    diff_mean = [c[0] for c in ci]
    peak = int(np.argmax(diff_mean))  # first σ of the largest mean gain
    negative_from = next((sigmas[i] for i in range(peak + 1, len(sigmas)) if diff_mean[i] < 0), None)

    out = {"sigmas": sigmas, "seeds": seeds}
    for m in MODELS:
        out[m] = {"mean": acc[m].mean(axis=0).tolist(), "per_seed": acc[m].tolist()}
    out["diff"] = {"mean": diff_mean, "ci_low": [c[1] for c in ci], "ci_high": [c[2] for c in ci]}
    out["peak"] = {"sigma": sigmas[peak], "diff": diff_mean[peak]}
    out["negative_from"] = negative_from
    return out


def _validate(sigmas: list[float], seeds: list[int]) -> None:
    if not sigmas:
        raise ValueError("sigmas is empty; give at least one noise level σ ≥ 0")
    if not seeds:
        raise ValueError("seeds is empty; give at least one noise seed")
    bad = [s for s in sigmas if not math.isfinite(s) or s < 0]
    if bad:
        raise ValueError(f"noise σ must be finite and ≥ 0, got {bad}")
    if any(b <= a for a, b in zip(sigmas, sigmas[1:])):
        raise ValueError(f"sigmas must be strictly increasing, got {sigmas}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
