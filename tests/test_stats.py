"""The effect CI (seeds × test images) and the verdict rule, on synthetic data with a known effect."""

import math

import numpy as np
import pytest

from gattanet.analysis.stats import CONTRADICTED, INCONCLUSIVE, SUPPORTED, effect_ci, verdict


def _gains(rng, effect: float, seeds: int, images: int, seed_sd: float, flip: float = 0.08) -> np.ndarray:
    """Per-image gains (GAttANet right − baseline right) of `seeds` training seeds, expectation `effect`.

    Image i is one the attention tends to fix (+1) or break (-1), a tendency shared by all seeds
    and realised by each seed half the time; on top, seed s fixes and breaks images of its own at
    rates that differ by u_s ~ N(0, seed_sd): seeds differ by seed_sd, and average to `effect`.
    """
    up = (flip + effect) / 2
    z = rng.choice([-1.0, 0.0, 1.0], size=images, p=[flip - up, 1 - flip, up])
    shared = 2 * z[None, :] * (rng.random((seeds, images)) < 0.5)
    u = rng.normal(0, seed_sd, size=(seeds, 1))
    r = rng.random((seeds, images))
    own = (r < 0.03 + u / 2).astype(float) - ((r >= 0.03 + u / 2) & (r < 0.06)).astype(float)
    return shared + own


def test_mean_is_the_weighted_mean_of_groups():
    a = np.array([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    b = np.array([[0.0, 0.0, 1.0, 0.0]])
    est = effect_ci([(1.0, a), (-1.0, b)], offset=0.1)
    assert est.mean == pytest.approx(0.1 + 0.5 - 0.25)
    assert est.seeds == (2, 1) and est.images == 4
    assert est.low < est.mean < est.high


def test_one_seed_one_group_is_the_paired_bootstrap_variance_of_the_mean():
    rng = np.random.default_rng(0)
    v = rng.choice([-1.0, 0.0, 1.0], size=(1, 500), p=[0.05, 0.85, 0.10])
    est = effect_ci([(1.0, v)])
    boot = [v[0, rng.integers(0, 500, 500)].mean() for _ in range(4000)]
    assert est.sd_images == pytest.approx(np.std(boot), rel=0.08)
    assert est.sd_seeds == 0 and est.df > 400  # no seed spread: nearly a normal interval


@pytest.mark.parametrize("effect, seed_sd", [(0.01, 0.012), (0.0, 0.01)])
def test_ci_covers_a_known_effect_about_95_percent_of_the_time(effect, seed_sd):
    rng = np.random.default_rng(1)
    reps, hits, naive_hits = 400, 0, 0
    for _ in range(reps):
        v = _gains(rng, effect, seeds=3, images=4000, seed_sd=seed_sd)
        est = effect_ci([(1.0, v)])
        hits += est.low <= effect <= est.high
        z = 1.96 * est.sd_images  # test-set sampling only: ignores the seeds
        naive_hits += est.mean - z <= effect <= est.mean + z
    assert 0.92 <= hits / reps <= 0.995
    assert naive_hits / reps < 0.9  # the seed term is what makes the coverage: leaving it out undercovers


def test_few_seeds_widen_the_interval():
    rng = np.random.default_rng(2)
    v = _gains(rng, 0.01, seeds=3, images=4000, seed_sd=0.006)
    est = effect_ci([(1.0, v)])
    assert est.df < 30  # seeds dominate: t with few degrees of freedom
    assert est.half_width > 1.96 * math.hypot(est.sd_images, est.sd_seeds)


def test_difference_of_two_groups_pairs_the_images():
    rng = np.random.default_rng(3)
    shared = rng.random((1, 3000)) < 0.8  # both groups share most of their per-image outcome
    a = np.repeat(shared, 3, axis=0).astype(float)
    b = a.copy()
    b[:, :30] = 0  # group b loses 30 images in every seed
    est = effect_ci([(1.0, a), (-1.0, b)])
    assert est.mean == pytest.approx(a[:, :30].mean() * 30 / 3000)
    assert est.half_width < 0.01  # paired: the shared outcomes cancel


@pytest.mark.parametrize("low, high, direction, size, want", [
    (0.002, 0.01, 1, None, SUPPORTED),       # CI above zero, paper says > 0
    (-0.004, 0.01, 1, None, INCONCLUSIVE),   # CI spans zero
    (-0.01, -0.002, 1, None, CONTRADICTED),  # CI below zero, paper says > 0
    (-0.01, -0.002, -1, None, SUPPORTED),    # paper says < 0
    (0.002, 0.01, 1, 0.02, CONTRADICTED),    # above zero but excludes the paper's +2 pts
    (0.01, 0.03, 1, 0.02, SUPPORTED),
])
def test_verdict(low, high, direction, size, want):
    est = effect_ci([(1.0, np.array([[0.0, 1.0]]))])  # any estimate; its interval is replaced
    est = type(est)(**{**est.__dict__, "low": low, "high": high, "mean": (low + high) / 2})
    assert verdict(est, direction, size) == want


def test_verdicts_on_synthetic_runs_with_known_truth():
    rng = np.random.default_rng(4)
    assert verdict(effect_ci([(1.0, _gains(rng, 0.02, 3, 10000, 0.002))])) == SUPPORTED
    assert verdict(effect_ci([(1.0, _gains(rng, 0.0, 3, 10000, 0.002))])) == INCONCLUSIVE
    assert verdict(effect_ci([(1.0, _gains(rng, -0.02, 3, 10000, 0.002))])) == CONTRADICTED


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least one group"):
        effect_ci([])
    with pytest.raises(ValueError, match="share the test images"):
        effect_ci([(1.0, np.zeros((2, 5))), (1.0, np.zeros((2, 6)))])
    with pytest.raises(ValueError, match="shape"):
        effect_ci([(1.0, np.zeros(5))])
