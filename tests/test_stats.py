"""The effect CI (seeds × test images) and the verdict rule, on synthetic data with a known effect."""

import math

import numpy as np
import pytest

from scipy import stats as sps

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


def _ternary(rng, p: float, shape) -> np.ndarray:
    """-1 / 0 / +1 with P(±1) = p / 2 each (variance p): binary-ish outcomes, like correct-minus-correct."""
    r = rng.random(shape, dtype=np.float32)
    return (r < p / 2).astype(np.int8) - ((r >= p / 2) & (r < p)).astype(np.int8)


def _crossed(rng, reps: int, seeds: int, images: int, seed_sd: float, image_var: float, resid_var: float,
             mean: float = 0.004) -> np.ndarray:
    """`reps` seeds × images tables v = mean + a_s + b_i + e_si: seed effects a ~ N(0, seed_sd), binary-ish image
    effects b (variance image_var) shared by every seed, binary-ish residuals e (variance resid_var)."""
    a = rng.normal(0, seed_sd, (reps, seeds, 1))
    return mean + a + _ternary(rng, image_var, (reps, 1, images)) + _ternary(rng, resid_var, (reps, seeds, images))


# The real runs' make-up: sd from images 0.19 pts (image + residual parts over N = 10,000), from seeds 0.10 pts
# (σ_a² / 3), 3 seeds; then a seed-dominated, and a zero-seed-variance setting.
IMAGE_DOMINATED = dict(seeds=3, images=10_000, seed_sd=math.sqrt(3) * 0.0010, image_var=0.0161, resid_var=0.06)
SEED_DOMINATED = dict(seeds=3, images=4_000, seed_sd=0.02, image_var=0.02, resid_var=0.06)
ZERO_SEED = dict(seeds=3, images=4_000, seed_sd=0.0, image_var=0.02, resid_var=0.06)
REPS, BAND = 2_000, (0.93, 0.97)


def _true_var(seeds, images, seed_sd, image_var, resid_var) -> float:
    return seed_sd ** 2 / seeds + image_var / images + resid_var / (seeds * images)


def _replicate(setting: dict, seed: int, intervals) -> tuple[dict, np.ndarray]:
    """Coverage of the true mean by each interval {name: fn(v, est) -> (low, high)} over REPS tables, and the
    estimates' (mean, se²) per table."""
    rng, hits, moments = np.random.default_rng(seed), {k: 0 for k in intervals}, []
    for _ in range(REPS // 200):
        for v in _crossed(rng, 200, **setting):
            est = effect_ci([(1.0, v)])
            moments.append((est.mean, est.se ** 2))
            for name, fn in intervals.items():
                low, high = fn(v, est)
                hits[name] += low <= 0.004 <= high
    return {k: h / REPS for k, h in hits.items()}, np.array(moments)


def _ours(v, est):
    return est.low, est.high


def _without_seed_term(v, est):
    """Negative control: test-set sampling only."""
    half = sps.t.ppf(0.975, v.shape[1] - 1) * est.sd_images
    return est.mean - half, est.mean + half


def _seeds_only(v, est):
    """Negative control: a t interval over the per-seed means alone."""
    m = v.mean(axis=1)
    half = sps.t.ppf(0.975, len(m) - 1) * m.std(ddof=1) / math.sqrt(len(m))
    return m.mean() - half, m.mean() + half


def test_coverage_where_images_dominate_like_the_real_runs():
    cover, moments = _replicate(IMAGE_DOMINATED, 10, {"ours": _ours, "seeds only": _seeds_only})
    assert BAND[0] <= cover["ours"] <= BAND[1]
    assert cover["seeds only"] < BAND[0]  # the image part is common to every seed: the seed means cannot see it
    mc = moments[:, 0].var(ddof=1)
    assert 0.97 <= moments[:, 1].mean() / mc <= 1.15  # biased up only by clamping a negative seed component
    assert 0.9 <= mc / _true_var(**IMAGE_DOMINATED) <= 1.1


def test_the_old_variance_counts_the_residual_twice():
    """var(image means)/N + var(seed means)/S (the previous formula) against the Monte Carlo variance: too wide."""
    rng = np.random.default_rng(11)
    tables = _crossed(rng, 400, **IMAGE_DOMINATED)
    old = [v.mean(axis=0).var(ddof=1) / v.shape[1] + v.mean(axis=1).var(ddof=1) / v.shape[0] for v in tables]
    assert np.mean(old) / _true_var(**IMAGE_DOMINATED) > 1.2


def test_coverage_where_seeds_dominate():
    cover, moments = _replicate(SEED_DOMINATED, 12, {"ours": _ours, "no seed term": _without_seed_term})
    assert BAND[0] <= cover["ours"] <= BAND[1]
    assert cover["no seed term"] < BAND[0]
    assert 0.9 <= moments[:, 1].mean() / moments[:, 0].var(ddof=1) <= 1.1  # no clamping here: unbiased


def test_coverage_without_seed_variance():
    cover, _ = _replicate(ZERO_SEED, 13, {"ours": _ours})
    assert BAND[0] <= cover["ours"] <= BAND[1]


def _two_runs(rng, reps: int, shared_sd: float = 0.01, own_sd: float = 0.002, seeds: int = 3, images: int = 4_000):
    """Two runs whose seed s shares a seed effect (the same derived seed) and whose images share most of
    their effect; run a − run b has expectation 0.003."""
    shared = rng.normal(0, shared_sd, (reps, seeds, 1)) + _ternary(rng, 0.02, (reps, 1, images))
    a = 0.003 + shared + rng.normal(0, own_sd, (reps, seeds, 1)) + _ternary(rng, 0.005, (reps, 1, images)) \
        + _ternary(rng, 0.06, (reps, seeds, images))
    b = shared + rng.normal(0, own_sd, (reps, seeds, 1)) + _ternary(rng, 0.005, (reps, 1, images)) \
        + _ternary(rng, 0.06, (reps, seeds, images))
    return a, b


def test_coverage_of_a_paired_difference_and_pairing_narrows_it():
    rng, hits, widths = np.random.default_rng(14), 0, []
    for _ in range(REPS // 200):
        a, b = _two_runs(rng, 200)
        for x, y in zip(a, b):
            est = effect_ci([(1.0, x), (-1.0, y)], paired=True)
            hits += est.low <= 0.003 <= est.high
            widths.append((est.half_width, effect_ci([(1.0, x), (-1.0, y)]).half_width))
    assert BAND[0] <= hits / REPS <= BAND[1]
    paired, independent = np.array(widths).T
    assert np.median(paired / independent) < 0.5  # the shared seed effect cancels per seed


def test_paired_groups_need_the_same_seeds():
    with pytest.raises(ValueError, match="same seeds"):
        effect_ci([(1.0, np.zeros((3, 5))), (-1.0, np.zeros((2, 5)))], paired=True)


def test_one_seed_is_labelled_test_images_only():
    rng = np.random.default_rng(15)
    one = effect_ci([(1.0, _crossed(rng, 1, **IMAGE_DOMINATED)[0][:1])])
    many = effect_ci([(1.0, _crossed(rng, 1, **IMAGE_DOMINATED)[0])])
    assert not one.spans_seeds and one.sd_seeds == 0 and one.as_dict()["spans_seeds"] is False
    assert many.spans_seeds


def test_detectable_effect_at_80_percent_power():
    rng = np.random.default_rng(16)
    est = effect_ci([(1.0, _crossed(rng, 1, **SEED_DOMINATED)[0])])
    t = sps.t.ppf(0.975, est.df), sps.t.ppf(0.8, est.df)
    assert est.detectable_80 == pytest.approx((t[0] + t[1]) * est.se)
    assert est.detectable_80 > est.half_width  # the half-width is detected only half the time
    # a true effect of detectable_80 is detected ~80 % of the time by this interval (normal approximation)
    z = est.detectable_80 / est.se
    assert sps.t.sf(sps.t.ppf(0.975, est.df) - z, est.df) == pytest.approx(0.8, abs=0.01)


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


# ---------------------------------------------------------------- the formula pinned on hand-computed tables


def test_the_interval_is_the_two_way_anova_formula_on_a_hand_computed_table():
    """3 seeds × 4 images. Seed means 1/2, 1, 1/4; image means 2/3, 1/3, 1, 1/3; grand 7/12. MS_seed = 4 · Σ(seed
    mean − 7/12)² / 2 = 7/12; MS_image = 3 · Σ(image mean − 7/12)² / 3 = 11/36; SS_total = 7 − 12 (7/12)² = 35/12, so
    MS_residual = (35/12 − 14/12 − 11/12) / 6 = 5/36. V_images = MS_image / 12 = 11/432, V_seeds = (MS_seed −
    MS_residual) / 12 = 16/432, V = 27/432 = 1/16. Satterthwaite: ν = V² / [V_images²/3 + (MS_seed/12)²/2 +
    (MS_residual/12)²/6] = (4374 / 1119744) / (1590 / 1119744) = 729/265."""
    v = np.array([[1, 0, 1, 0], [1, 1, 1, 1], [0, 0, 1, 0]], dtype=float)
    est = effect_ci([(1.0, v)])
    assert est.mean == pytest.approx(7 / 12, abs=1e-12)
    assert est.sd_images ** 2 == pytest.approx(11 / 432, abs=1e-12)
    assert est.sd_seeds ** 2 == pytest.approx(16 / 432, abs=1e-12)
    assert est.se == pytest.approx(0.25, abs=1e-12)
    assert est.df == pytest.approx(729 / 265, abs=1e-9)
    half = sps.t.ppf(0.975, 729 / 265) * 0.25
    assert (est.low, est.high) == pytest.approx((7 / 12 - half, 7 / 12 + half), abs=1e-12)


def test_a_table_whose_seed_component_clamps_spans_the_images_only_on_their_df():
    """2 seeds × 3 images, both seeds at 2/3: MS_seed = 0 below MS_residual = (residuals 0, ∓1/2, ±1/2: SS 1) / 2 =
    1/2, so the seed component clamps at 0; V = var(image means 1, 1/2, 1/2) / 3 = (1/12) / 3 = 1/36 on N − 1 = 2
    df."""
    v = np.array([[1, 0, 1], [1, 1, 0]], dtype=float)
    est = effect_ci([(1.0, v)])
    assert est.sd_seeds == 0 and est.sd_images == pytest.approx(1 / 6, abs=1e-12)
    assert est.df == pytest.approx(2, abs=1e-12) and est.mean == pytest.approx(2 / 3, abs=1e-12)
    assert est.half_width == pytest.approx(sps.t.ppf(0.975, 2) / 6, abs=1e-12)


# ---------------------------------------------------------------- a rate's interval (the true-class claim)


def test_the_rate_interval_covers_a_rate_and_stays_inside_0_1():
    from gattanet.analysis.stats import rate_interval

    rng = np.random.default_rng(11)
    hits = 0
    reps = 400
    for _ in range(reps):  # per-image difficulty: the images cluster the hits; true rate 0.6
        p = rng.beta(3, 2, size=600)
        est = effect_ci([(1.0, (rng.random((3, 600)) < p).astype(float))])
        low, high = rate_interval(est)
        hits += low <= 0.6 <= high
    assert 0.93 <= hits / reps <= 0.98
    near_one = effect_ci([(1.0, (rng.random((3, 200)) < 0.995).astype(float))])
    low, high = rate_interval(near_one)
    assert 0.9 < low < near_one.mean <= high <= 1.0 and near_one.high > 1.0  # the t interval leaves [0, 1]
    all_right = effect_ci([(1.0, np.ones((3, 50)))])
    assert rate_interval(all_right)[1] == 1.0 and rate_interval(all_right)[0] < 1.0
