"""Noise sweeps (gattanet.analysis.sweeps): per-image correctness of every model at every σ on the same noisy images,
and the gains' CIs paired per image and seed (gain at σ_i, growth gain(σ_i) − gain(0))."""

import inspect

import numpy as np
import pytest
import torch
from torch import nn

from gattanet.models.attention import GlobalAttention
from gattanet.models.registry import build_backbone
from gattanet.data.datasets import TensorData
from gattanet.engine.evaluate import correct
from gattanet.engine.fast_eval import shared_logits
from gattanet.data.loader import Finish, TensorLoader
from gattanet.models.gattanet import GAttANet
from gattanet.analysis.stats import effect_ci
from gattanet.analysis.sweeps import gain_at, gains, growth, relative_sigma, sweep_correct


pytestmark = pytest.mark.usefixtures("one_thread")


def data(n: int = 40, size: int = 4, seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    return TensorData(torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g),
                      torch.randint(0, 5, (n,), generator=g), (0.5,), (0.3,), tuple("abcde"))


def linear(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 5)).eval()


# ---------------------------------------------------------------- sweep_correct


def test_sweep_correct_scores_every_model_on_the_same_noisy_images_at_every_sigma():
    d, sigmas = data(), [0.0, 0.1, 0.5]
    models = {"baseline": linear(0), "m": linear(1)}
    seen, asked = [], []

    def logits_of(x):
        seen.append(x.clone())
        return {name: m(x) for name, m in models.items()}

    def loader_at(sigma):
        asked.append(sigma)
        return TensorLoader(d, 16, Finish(d.mean, d.std, sigma=sigma, noise_seed=3))

    hits = sweep_correct(logits_of, loader_at, sigmas)
    assert asked == sigmas and all(isinstance(s, float) for s in asked)
    assert set(hits) == {"baseline", "m"}
    for name, h in hits.items():
        assert h.shape == (3, 40) and h.dtype == bool
        for i, s in enumerate(sigmas):  # row i is `correct` on the loader at σ_i
            want = correct({name: models[name]}, TensorLoader(d, 7, Finish(d.mean, d.std, sigma=s, noise_seed=3)))[name][:, 0].numpy()
            np.testing.assert_array_equal(h[i], want)
    assert len(seen) == 3 * 3  # one call per batch gives every model's logits: same images for all
    assert not np.array_equal(hits["m"][0], hits["m"][2])  # the noise changed some predictions


def test_sweep_of_real_gattanets_over_shared_logits_is_repeatable_and_paired_with_the_baseline():
    torch.manual_seed(0)
    backbone = build_backbone("toy", 5, 1, widths=(4, 8, 8), hidden=16, input_size=16)
    models = {}
    for seed in (0, 1):
        m = GAttANet(backbone, GlobalAttention(backbone.taps(), 4)).eval()
        with torch.no_grad():
            m.attention.alpha.normal_(0, 1, generator=torch.Generator().manual_seed(seed))
        models[str(seed)] = m
    d = data(n=30, size=16, seed=1)

    def run():
        return sweep_correct(lambda x: shared_logits(models, x), lambda s: TensorLoader(d, 8, Finish(d.mean, d.std, sigma=s, noise_seed=1)),
                             [0.0, 0.2])

    first, again = run(), run()
    assert set(first) == {"baseline", "0", "1"}
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    base = correct({"b": backbone}, TensorLoader(d, 8, Finish(d.mean, d.std, sigma=0.2, noise_seed=1)))["b"][:, 0].numpy()
    np.testing.assert_array_equal(first["baseline"][1], base)


@pytest.mark.parametrize("sigmas", [[], [0.1, 0.2], [0.0, 0.1, 0.05], [0.0, 0.1, 0.1], [0.0, float("nan")],
                                    [0.0, float("inf")], [-0.1, 0.0]])
def test_sigmas_must_start_at_zero_and_increase_strictly(sigmas):
    asked = []
    with pytest.raises(ValueError, match="sigmas must start at 0"):
        sweep_correct(lambda x: {}, lambda s: asked.append(s), sigmas)
    assert asked == []  # refused before any evaluation


# ---------------------------------------------------------------- gains, gain_at, growth


def synthetic(rng: np.random.Generator, n: int = 2000):
    """A baseline (σ = 0, 0.1) and 3 seeds whose models fix the same 100 images at both σ (the images the
    attention helps, shared across σ), break 60 at both, and fix 40 more at σ = 0.1 only: gain +2 % clean,
    +4 % at σ = 0.1, growth +2 % of which the per-image fixes common to both σ carry no noise."""
    base = np.zeros((2, n), dtype=bool)
    base[:, : n // 2] = True                                    # the baseline gets half right at both σ
    wrong, right = np.arange(n // 2, n), np.arange(n // 2)
    models = np.repeat(base[None], 3, axis=0)
    for s in range(3):
        fix, brk = rng.choice(wrong, 140, replace=False), rng.choice(right, 60, replace=False)
        models[s, :, fix[:100]] = True
        models[s, :, brk] = False
        models[s, 1, fix[100:]] = True
    return base, models


def test_gains_are_per_image_differences_for_every_seed_and_sigma():
    base = np.array([[True, False, True], [False, False, True]])                 # (σ = 2, N = 3)
    models = np.array([[[True, True, False], [True, False, True]],
                       [[False, False, True], [False, True, True]]])              # (seeds = 2, σ, N)
    g = gains(base, models)
    assert g.dtype == np.float64 and g.shape == (2, 2, 3)
    np.testing.assert_array_equal(g, [[[0, 1, -1], [1, 0, 0]], [[-1, 0, 0], [0, 1, 0]]])


def test_gain_at_is_the_ci_of_the_accuracy_difference_at_that_sigma():
    base, models = synthetic(np.random.default_rng(0))
    for i, want in ((0, 0.02), (1, 0.04)):
        est = gain_at(base, models, i)
        assert est.mean == pytest.approx(want) == pytest.approx(models[:, i].mean() - base[i].mean())
        assert est.low < want < est.high and est.low > 0
        assert est.seeds == (3,) and est.images == 2000
        assert est == effect_ci([(1.0, models[:, i].astype(float) - base[i])])


def test_growth_is_paired_per_image_and_seed():
    base, models = synthetic(np.random.default_rng(1))
    g0, g1, grow = gain_at(base, models, 0), gain_at(base, models, 1), growth(base, models, 1)
    assert grow.mean == pytest.approx(g1.mean - g0.mean) == pytest.approx(0.02)
    assert grow.low > 0
    # the images fixed or broken at both σ cancel: much narrower than two independent gains would give
    assert grow.half_width < 0.6 * np.hypot(g0.half_width, g1.half_width)
    zero = growth(base, models, 0)  # gain(0) − gain(0): nothing, exactly
    assert zero.mean == zero.low == zero.high == 0.0


def test_growth_decides_at_the_given_sigma_not_at_the_best_one():
    """A gain that peaks at σ_1 and is gone at σ_2: the growth at σ_2 is negative whatever σ_1 shows."""
    base, models = synthetic(np.random.default_rng(2))
    base = np.concatenate([base, base[:1]])               # σ_2: the baseline as clean
    models = np.concatenate([models, base[None, :1].repeat(3, axis=0)], axis=1)  # no gain left at σ_2
    assert growth(base, models, 1).low > 0
    late = growth(base, models, 2)
    assert late.mean == pytest.approx(-0.02) and late.high < 0


# ---------------------------------------------------------------- the dataset-relative σ*

SIGMAS = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4]


@pytest.mark.parametrize("scale, fraction, want", [
    (0.05, 0.5, 0.05),   # margin kept exp(−σ/0.05): 37 % left at 0.05, the first σ past half lost
    (0.2, 0.5, 0.2),     # a sturdier baseline: half lost only by 0.2 (exp(−1) = 37 % left)
    (0.2, 0.25, 0.1),    # a quarter lost first at 0.1 (exp(−0.5) = 61 % left)
    (1.0, 0.5, None),    # still 67 % of its margin at σ = 0.4: not reached on this sweep
])
def test_relative_sigma_is_the_first_sigma_where_the_baseline_lost_the_fraction(scale, fraction, want):
    chance = 0.1
    acc = chance + 0.8 * np.exp(-np.array(SIGMAS) / scale)
    i = relative_sigma(SIGMAS, acc, chance, fraction)
    assert (None if i is None else SIGMAS[i]) == want


def test_relative_sigma_reads_the_baseline_alone_and_takes_the_first_crossing():
    """A non-monotone curve (sampling noise) crosses the bar at 0.05, recovers, crosses again: the first σ counts.
    Its signature takes the baseline's curve only, so no GAttANet curve can move it."""
    acc = [0.9, 0.8, 0.6, 0.5, 0.55, 0.3, 0.1]
    assert SIGMAS[relative_sigma(SIGMAS, acc, 0.1, 0.5)] == 0.05   # bar 0.9 − 0.5·0.8 = 0.5, reached exactly
    assert SIGMAS[relative_sigma(SIGMAS, acc, 0.1, 0.49)] == 0.05
    assert SIGMAS[relative_sigma(SIGMAS, acc, 0.1, 0.51)] == 0.2
    assert set(inspect.signature(relative_sigma).parameters) == {"sigmas", "baseline_acc", "chance", "fraction"}


@pytest.mark.parametrize("acc, chance, fraction, match", [
    ([0.9, 0.5], 0.1, 0.5, "one accuracy per σ"),
    ([0.9, 0.5, 0.3, 0.2, 0.1, 0.1, 0.1], 0.1, 1.0, "fraction"),
    ([0.9, 0.5, 0.3, 0.2, 0.1, 0.1, 0.1], 0.1, 0.0, "fraction"),
    ([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], 0.1, 0.5, "chance"),   # no margin over chance to lose
])
def test_relative_sigma_rejects_bad_input(acc, chance, fraction, match):
    with pytest.raises(ValueError, match=match):
        relative_sigma(SIGMAS, acc, chance, fraction)
