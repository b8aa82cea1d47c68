"""Confidence intervals of effects measured on one test set by models of several training seeds,
and the verdict an interval supports.

An effect is a weighted sum of groups' means, E = offset + Σ_k w_k · mean_{s,i} v_k[s, i], where
v_k[s, i] is a per-image value (e.g. GAttANet correct − baseline correct) of training seed s of
group k on test image i. Its variance has two parts, both estimated from the data:

- test-set sampling: the per-image combination c_i = Σ_k w_k · mean_s v_k[s, i] is averaged over
  N images, so V_images = var(c) / N (the closed form of a paired bootstrap over test images,
  resampling each image with all its seeds and models);
- training seeds: group k's per-seed means g_ks vary around the procedure's expected effect, so
  V_seeds = Σ_k w_k² · var_s(g_k) / S_k (a group of one seed adds nothing: its spread is unknown).

The CI is E ± t_ν · √(V_images + V_seeds), with ν the Welch–Satterthwaite degrees of freedom, so a
few seeds widen it as they should. Per-seed means also carry their own test-set noise, which is
counted again in V_images: the interval errs on the wide side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

LEVEL = 0.95
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
NOT_RUN, NOT_APPLICABLE = "not run", "not applicable"


@dataclass(frozen=True)
class Estimate:
    """An effect, its CI at `level`, and what the interval was made of."""

    mean: float
    low: float
    high: float
    level: float
    df: float              # Welch–Satterthwaite degrees of freedom (inf: test sampling only)
    sd_images: float       # √V_images
    sd_seeds: float        # √V_seeds
    seeds: tuple[int, ...]  # number of seeds per group
    images: int
    seed_means: tuple[tuple[float, ...], ...]  # per group, the effect of each seed (weights applied)

    @property
    def half_width(self) -> float:
        """The smallest effect this run could tell from zero."""
        return (self.high - self.low) / 2

    def as_dict(self) -> dict:
        return asdict(self) | {"half_width": self.half_width}


def effect_ci(groups: Sequence[tuple[float, np.ndarray]], offset: float = 0.0,
              level: float = LEVEL) -> Estimate:
    """CI of offset + Σ w_k · mean v_k for groups [(w_k, v_k (S_k seeds, N images)), ...] on the same N images."""
    if not groups:
        raise ValueError("effect_ci needs at least one group")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    arrays = [np.asarray(v, dtype=np.float64) for _, v in groups]
    weights = [float(w) for w, _ in groups]
    for v in arrays:
        if v.ndim != 2 or v.shape[0] < 1 or v.shape[1] < 2:
            raise ValueError(f"each group needs values of shape (seeds ≥ 1, images ≥ 2), got {v.shape}")
    n = arrays[0].shape[1]
    if any(v.shape[1] != n for v in arrays):
        raise ValueError(f"groups must share the test images; got {[v.shape[1] for v in arrays]} images")

    per_image = sum(w * v.mean(axis=0) for w, v in zip(weights, arrays))
    mean = offset + float(per_image.mean())
    v_images = float(per_image.var(ddof=1)) / n
    seed_terms = [w * w * float(v.mean(axis=1).var(ddof=1)) / v.shape[0]
                  for w, v in zip(weights, arrays) if v.shape[0] > 1]
    dfs = [v.shape[0] - 1 for v in arrays if v.shape[0] > 1]
    var = v_images + sum(seed_terms)
    denominator = v_images ** 2 / (n - 1) + sum(t * t / d for t, d in zip(seed_terms, dfs))
    df = var * var / denominator if denominator > 0 else math.inf
    half = float(sps.t.ppf(0.5 + level / 2, df)) * math.sqrt(var) if var > 0 else 0.0
    return Estimate(mean, mean - half, mean + half, level, df, math.sqrt(v_images), math.sqrt(sum(seed_terms)),
                    tuple(v.shape[0] for v in arrays), n,
                    tuple(tuple(float(w * m) for m in v.mean(axis=1)) for w, v in zip(weights, arrays)))


def verdict(est: Estimate, direction: int = 1, paper_size: float | None = None) -> str:
    """'supported' when the CI excludes zero on the paper's side (direction +1: the effect is > 0),
    'contradicted' when it excludes that side or the size the paper states, else 'inconclusive'."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    low, high = sorted((direction * est.low, direction * est.high))
    if high < 0 or (paper_size is not None and high < direction * paper_size):
        return CONTRADICTED
    if low > 0:
        return SUPPORTED
    return INCONCLUSIVE
