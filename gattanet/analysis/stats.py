"""Confidence intervals of effects measured on one test set by models of several training seeds,
the effect a run could detect, and the verdict an interval supports.

An effect is a weighted sum of groups' means, E = offset + Σ_k w_k · mean_{s,i} v_k[s, i], where
v_k[s, i] is a per-image value (e.g. GAttANet correct − baseline correct) of training seed s of
group k on test image i. Each group is a crossed seeds × images design, v = μ + a_s + b_i + e_si, and
its mean's variance σ_a²/S + σ_b²/N + σ_e²/(S·N) is estimated by the two-way ANOVA mean squares:

- images: the per-image combination c_i = Σ_k w_k · mean_s v_k[s, i] gives V_images = var(c) / N, an
  unbiased estimate of the image and residual parts (= Σ MS_image / (S·N) for one group);
- seeds: group k's seed component, V_seeds = Σ_k w_k² · (MS_seed,k − MS_residual,k) / (S_k · N), the
  per-seed means' spread less the test-set noise they carry (which V_images already counts).

For one group V_images + V_seeds = (MS_seed + MS_image − MS_residual)/(S·N), unbiased. A negative seed
component (seed means agreeing better than test-set noise allows) is clamped at 0, the usual truncation of
an ANOVA variance component: the interval then spans test images only, and errs wide only by that clamp.
The CI is E ± t_ν · √(V_images + V_seeds), ν by Satterthwaite for this combination of mean squares (each
MS with coefficient c and its own df: ν = V² / Σ (c·MS)²/df): ≈ N − 1 when images dominate, ≈ S − 1 when
seeds do, and continuous between. tests/test_stats.py checks its coverage in an image-dominated, a
seed-dominated, a zero-seed-variance and a paired setting (measured on 2,000 replications each, 2026-12-02:
0.958, 0.940, 0.960 and inside the band for the paired one).

Groups are independent seed sets unless `paired=True`: then seed s of every group shares its seed effect
(the same derived seed: d = 16 and d = 64 runs, lesions, controls), the groups must have equal seed counts,
and the combination is formed per seed and image first, Σ_k w_k v_k[s, i], before the ANOVA; the shared
seed effect cancels. With one seed (any group) the seed component is unknown: the interval spans test
images only and says so (`Estimate.spans_seeds` is False).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import stats as sps

LEVEL = 0.95
POWER = 0.80
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
NOT_RUN, NOT_APPLICABLE = "not run", "not applicable"


@dataclass(frozen=True)
class Estimate:
    """An effect, its CI at `level`, and what the interval was made of."""

    mean: float
    low: float
    high: float
    level: float
    df: float              # degrees of freedom of the t quantile (module docstring; inf: no spread at all,
    #                        written to JSON as DF_NO_SPREAD)
    sd_images: float       # √V_images
    sd_seeds: float        # √V_seeds (0 when clamped or unknown)
    seeds: tuple[int, ...]  # number of seeds per group
    images: int
    seed_means: tuple[tuple[float, ...], ...]  # per group, the effect of each seed (weights applied)
    paired: bool = False   # groups combined per seed (shared seed effects) before the ANOVA

    @property
    def half_width(self) -> float:
        """Half the CI: the effect this run tells from zero with only 50 % power."""
        return (self.high - self.low) / 2

    @property
    def se(self) -> float:
        """The standard error, √(V_images + V_seeds)."""
        return math.hypot(self.sd_images, self.sd_seeds)

    @property
    def spans_seeds(self) -> bool:
        """Whether the interval counts seed-to-seed spread (every group has ≥ 2 seeds); else test images only."""
        return min(self.seeds) >= 2

    @property
    def detectable_80(self) -> float:
        """The effect this run detects with 80 % power by a two-sided test at `level`: (t_{1-α/2} + t_{0.8})·SE."""
        return detectable(self, POWER)

    def p_above(self, threshold: float = 0.0) -> float:
        """One-sided p-value of H0: effect ≤ threshold (t with the interval's df): small when the CI lies above it."""
        if self.se == 0:
            return 0.0 if self.mean > threshold else 1.0
        return float(sps.t.sf((self.mean - threshold) / self.se, self.df))

    def p_below(self, threshold: float = 0.0) -> float:
        """One-sided p-value of H0: effect ≥ threshold: small when the CI lies below it."""
        if self.se == 0:
            return 0.0 if self.mean < threshold else 1.0
        return float(sps.t.cdf((self.mean - threshold) / self.se, self.df))

    def as_dict(self) -> dict:
        """The estimate as JSON every reader accepts: an infinite df (no spread at all) as DF_NO_SPREAD."""
        return asdict(self) | {"df": self.df if math.isfinite(self.df) else DF_NO_SPREAD,
                               "half_width": self.half_width, "spans_seeds": self.spans_seeds,
                               "detectable_80": self.detectable_80}


DF_NO_SPREAD = 1e300  # df written for an infinite one (Infinity is not JSON): its t quantiles are the normal's
DERIVED = ("half_width", "spans_seeds", "detectable_80")  # keys of as_dict() that are not fields


def detectable(est: Estimate, power: float = POWER) -> float:
    """The smallest true effect a two-sided test at est.level rejects with probability `power`."""
    if not 0 < power < 1:
        raise ValueError(f"power must lie in (0, 1), got {power}")
    return (float(sps.t.ppf(0.5 + est.level / 2, est.df)) + float(sps.t.ppf(power, est.df))) * est.se


def _anova(v: np.ndarray) -> tuple[float, float]:
    """(MS_seed, MS_residual) of a seeds × images table (S ≥ 2)."""
    s, n = v.shape
    seed_means, image_means, grand = v.mean(axis=1), v.mean(axis=0), v.mean()
    ms_seed = n * float(((seed_means - grand) ** 2).sum()) / (s - 1)
    resid = v - seed_means[:, None] - image_means[None, :] + grand
    ms_res = float((resid ** 2).sum()) / ((s - 1) * (n - 1))
    return ms_seed, ms_res


def effect_ci(groups: Sequence[tuple[float, np.ndarray]], offset: float = 0.0,
              level: float = LEVEL, paired: bool = False) -> Estimate:
    """CI of offset + Σ w_k · mean v_k for groups [(w_k, v_k (S_k seeds, N images)), ...] on the same N images;
    `paired`: seed s of every group shares its seed effect (equal seed counts), so the groups combine per seed."""
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
    if paired and len({v.shape[0] for v in arrays}) > 1:
        raise ValueError(f"paired groups need the same seeds; got {[v.shape[0] for v in arrays]} seeds")

    per_image = sum(w * v.mean(axis=0) for w, v in zip(weights, arrays))
    mean = offset + float(per_image.mean())
    v_images = float(per_image.var(ddof=1)) / n
    # Each seed table: MS_seed and MS_residual, with dfs S - 1 and (S - 1)(N - 1).
    tables = [(1.0, sum(w * v for w, v in zip(weights, arrays)))] if paired else list(zip(weights, arrays))
    # Satterthwaite: each mean square MS (df ν) enters var with a coefficient c; ν_var = var² / Σ (c·MS)²/ν.
    v_seeds, spread = 0.0, v_images ** 2 / (n - 1)
    for w, v in tables:
        s = v.shape[0]
        if s < 2:
            continue
        ms_seed, ms_res = _anova(v)
        if ms_seed <= ms_res:
            continue  # clamped: no seed spread beyond the test-set noise the seed means carry
        c = w * w / (s * n)
        v_seeds += c * (ms_seed - ms_res)
        spread += (c * ms_seed) ** 2 / (s - 1) + (c * ms_res) ** 2 / ((s - 1) * (n - 1))
    var = v_images + v_seeds
    df = var * var / spread if var > 0 and spread > 0 else math.inf
    half = float(sps.t.ppf(0.5 + level / 2, df)) * math.sqrt(var) if var > 0 else 0.0
    return Estimate(mean, mean - half, mean + half, level, df, math.sqrt(v_images), math.sqrt(v_seeds),
                    tuple(v.shape[0] for v in arrays), n,
                    tuple(tuple(float(w * m) for m in v.mean(axis=1)) for w, v in zip(weights, arrays)), paired)


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


def releveled(est: Estimate, level: float) -> Estimate:
    """The same estimate with its interval at another `level` (same standard error and degrees of freedom)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    half = float(sps.t.ppf(0.5 + level / 2, est.df)) * est.se
    return replace(est, low=est.mean - half, high=est.mean + half, level=level)


def equivalence(est: Estimate, margin: float, alpha: float = 0.05) -> str:
    """Two one-sided tests (TOST) of |effect| < margin, each at `alpha`: 'supported' (equivalent) when the
    (1 − 2α) interval lies inside (−margin, +margin); 'contradicted' (surely different) when it lies wholly
    beyond one side of the margin; else 'inconclusive'."""
    low, high = _one_sided_bounds(est, margin, alpha)
    if -margin < low and high < margin:
        return SUPPORTED
    if low >= margin or high <= -margin:
        return CONTRADICTED
    return INCONCLUSIVE


def at_most(est: Estimate, margin: float, alpha: float = 0.05) -> str:
    """One-sided test of effect < margin (non-superiority) at `alpha`: 'supported' when the (1 − 2α) interval
    lies below +margin, 'contradicted' when it lies wholly above it, else 'inconclusive'."""
    low, high = _one_sided_bounds(est, margin, alpha)
    if high < margin:
        return SUPPORTED
    if low >= margin:
        return CONTRADICTED
    return INCONCLUSIVE


def _one_sided_bounds(est: Estimate, margin: float, alpha: float) -> tuple[float, float]:
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), got {alpha}")
    est = releveled(est, 1 - 2 * alpha)
    return est.low, est.high


def holm_adjusted(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: p̃_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j)).
    Rejecting every hypothesis with p̃ < α controls the chance of any false rejection among the m at α."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        adjusted[i] = running
    return adjusted


def across_backbones(per_backbone: Sequence[np.ndarray], level: float = LEVEL) -> Estimate:
    """CI of an effect over the population of backbones a recipe would train: backbones a random factor.

    per_backbone[b] holds backbone b's per-image values, shape (seeds S_b, the same N test images). This is a
    random-effects interval with backbones as the top level: each backbone's seed-averaged per-image values form
    one row of a backbones × images table, w[b, i] = mean_s v_b[s, i] = μ + u_b + c_i + e_bi, where u_b carries
    the backbone's own effect and its seeds' spread. That table is the crossed design of `effect_ci` with
    backbones in the place of seeds, so the same unbiased ANOVA variance, (MS_backbone + MS_image − MS_residual)
    / (B·N), and Satterthwaite df (≈ B − 1 when backbones dominate) apply; every backbone weighs the same.

    Not a hierarchical bootstrap: with the B = 3 backbones a profile affords, resampling backbones has 10
    distinct draws and its percentile interval undercovers badly (it shrinks the backbone variance by (B − 1)/B
    and ignores the t quantile's width at 2 df). Satterthwaite's df alone runs liberal at so few backbones (a small
    MS_backbone draw raises the df just when the interval is already narrow, up to ∞ when the backbone component
    clamps: a fixed-effect width), so the df is capped at B − 1 (`backbone_df`): tests/test_random_backbones.py
    measured coverage 0.949 (backbone-dominated), 0.994 (small backbone variance; Satterthwaite alone 0.92), 1.0
    (image-dominated, no backbone variance: there it errs wide) on 2,000 replications of 3 backbones × 3 seeds × 300
    images, and 0.21 for the one-backbone interval it replaces.

    The returned Estimate counts backbones where a seed-level one counts seeds: `seeds` is (B,), `sd_seeds`
    the across-backbone part, `seed_means` each backbone's effect."""
    if len(per_backbone) < 2:
        raise ValueError(f"across_backbones needs at least 2 backbones, got {len(per_backbone)}")
    arrays = [np.asarray(v, dtype=np.float64) for v in per_backbone]
    for v in arrays:
        if v.ndim != 2 or v.shape[0] < 1:
            raise ValueError(f"each backbone needs values of shape (seeds ≥ 1, images), got {v.shape}")
    if len({v.shape[1] for v in arrays}) > 1:
        raise ValueError(f"backbones must share the test images; got {[v.shape[1] for v in arrays]} images")
    table = np.stack([v.mean(axis=0) for v in arrays])
    return backbone_df(effect_ci([(1.0, table)], level=level), len(arrays))


def backbone_df(est: Estimate, backbones: int) -> Estimate:
    """The across-backbone interval on at most B − 1 df: Satterthwaite's ν where it is smaller, else t on B − 1.

    A random-effects interval owes its width to the B backbone means, whatever the images say: when the backbone
    component clamps at 0 (ν → ∞, a fixed-effect width) the between-backbone spread is still estimated from B − 1
    df, so the t quantile stays on them (Hsu's conservative choice applied to the top level)."""
    df = min(est.df, backbones - 1)
    return releveled(replace(est, df=df), est.level) if df != est.df else est


def rate_interval(est: Estimate) -> tuple[float, float]:
    """A rate's CI kept inside [0, 1]: Clopper–Pearson at the effective sample size (Korn & Graubard, 1998).

    n_eff = p(1 − p) / SE², SE the seeds × images ANOVA's, so seed spread and the images' clustering widen it as
    they widen the t interval; x = p · n_eff successes; the bounds are the beta quantiles of Clopper–Pearson."""
    p, a = est.mean, 1 - est.level
    if est.se == 0 or p <= 0 or p >= 1:
        n_eff = float(est.images * min(est.seeds))
    else:
        n_eff = p * (1 - p) / est.se ** 2
    x = p * n_eff
    low = float(sps.beta.ppf(a / 2, x, n_eff - x + 1)) if x > 0 else 0.0
    high = float(sps.beta.ppf(1 - a / 2, x + 1, n_eff - x)) if x < n_eff else 1.0
    return low, high
