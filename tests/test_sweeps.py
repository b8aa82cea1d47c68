import math

import numpy as np
import pytest
import torch

from gattanet.attention import GlobalAttention
from gattanet.backbones import build_backbone
from gattanet.datasets import TensorData
from gattanet.evaluate import accuracies
from gattanet.loader import TensorLoader
from gattanet.model import GAttANet
from gattanet.sweeps import default_sigmas, mean_ci, noise_sweep


def noisy_eval(calls: list | None = None):
    """A stand-in for 'build a loader at (σ, seed) and score both models': accuracies fall with σ,
    jitter with the noise seed, and GAttANet gains most at moderate σ."""
    def evaluate_at(sigma: float, seed: int) -> dict:
        if calls is not None:
            calls.append((sigma, seed))
        g = torch.Generator().manual_seed(seed * 1000 + int(sigma * 1e4))
        jitter = torch.rand(2, generator=g).tolist()
        base = 0.9 - sigma + 0.01 * jitter[0] * (sigma > 0)
        gain = 0.05 * math.exp(-((math.log(sigma + 1e-3) - math.log(0.04)) ** 2))
        return {"baseline": base, "gattanet": base + gain + 0.01 * jitter[1] * (sigma > 0)}
    return evaluate_at


def test_sweep_repeats_exactly_with_same_seeds():
    sigmas, seeds = [0.0, 0.02, 0.05, 0.1], [0, 1, 2]
    assert noise_sweep(noisy_eval(), sigmas, seeds) == noise_sweep(noisy_eval(), sigmas, seeds)


def test_sweep_shapes_and_sigma0_evaluated_once():
    calls = []
    sigmas, seeds = [0.0, 0.03, 0.1], [3, 4]
    out = noise_sweep(noisy_eval(calls), sigmas, seeds)
    assert calls.count((0.0, 3)) == 1 and (0.0, 4) not in calls
    assert len(calls) == 1 + 2 * 2
    assert out["sigmas"] == sigmas and out["seeds"] == seeds
    for m in ("baseline", "gattanet"):
        per_seed = np.array(out[m]["per_seed"])
        assert per_seed.shape == (2, 3)
        assert per_seed[0, 0] == per_seed[1, 0]  # σ = 0 replicated
        np.testing.assert_allclose(out[m]["mean"], per_seed.mean(axis=0))
    diff = np.array(out["gattanet"]["per_seed"]) - np.array(out["baseline"]["per_seed"])
    np.testing.assert_allclose(out["diff"]["mean"], diff.mean(axis=0))


def test_ci_brackets_mean_and_collapses_for_identical_values():
    out = noise_sweep(noisy_eval(), [0.0, 0.02, 0.05], [0, 1, 2, 3])
    lo, mean, hi = (np.array(out["diff"][k]) for k in ("ci_low", "mean", "ci_high"))
    assert np.all(lo[1:] < mean[1:]) and np.all(mean[1:] < hi[1:])
    assert lo[0] == mean[0] == hi[0]  # σ = 0: identical per-seed values
    assert mean_ci([0.3, 0.3, 0.3]) == (0.3, 0.3, 0.3)


def test_mean_ci_matches_student_t_and_one_seed_is_the_value():
    v = [0.1, 0.2, 0.4]
    mean, lo, hi = mean_ci(v)
    sd = np.std(v, ddof=1)
    assert lo < mean < hi
    assert hi - mean == pytest.approx(4.302652729749464 * sd / math.sqrt(3))  # t(0.975, df=2), tables
    assert mean_ci([0.7]) == (0.7, 0.7, 0.7)
    with pytest.raises(ValueError):
        mean_ci([])


def test_peak_and_negative_from_on_hand_made_curve():
    base = {0.0: 0.9, 0.01: 0.8, 0.02: 0.7, 0.04: 0.6, 0.08: 0.5, 0.16: 0.4}
    gain = {0.0: 0.0, 0.01: 0.02, 0.02: 0.05, 0.04: 0.01, 0.08: -0.02, 0.16: 0.03}
    out = noise_sweep(lambda s, _seed: {"baseline": base[s], "gattanet": base[s] + gain[s]},
                      list(base), [0])
    assert out["peak"]["sigma"] == 0.02
    assert out["peak"]["diff"] == pytest.approx(0.05)
    assert out["negative_from"] == 0.08

    never = noise_sweep(lambda s, _seed: {"baseline": 0.5, "gattanet": 0.5 + s}, [0.0, 0.1], [0, 1])
    assert never["peak"]["sigma"] == 0.1 and never["negative_from"] is None


def test_default_sigmas_cover_range_log_spaced_and_denser_near_peak():
    s = default_sigmas()
    assert s[0] == 0.0 and min(s[1:]) == 0.01 and max(s) == 0.25
    assert s == sorted(set(s))
    ratios = np.array(s[2:]) / np.array(s[1:-1])
    inside = [r for a, r in zip(s[1:-1], ratios) if 0.03 <= a < 0.05]
    outside = [r for a, r in zip(s[1:-1], ratios) if a < 0.025 or a >= 0.06]
    assert len(inside) >= 3 and max(inside) < min(outside)


@pytest.mark.parametrize("sigmas, seeds", [
    ([], [0]), ([0.0], []), ([-0.1, 0.1], [0]), ([0.1, 0.05], [0]), ([0.1], [1, 1]),
    ([float("nan")], [0]),
])
def test_bad_arguments_raise(sigmas, seeds):
    with pytest.raises(ValueError):
        noise_sweep(noisy_eval(), sigmas, seeds)


def test_evaluate_at_missing_model_raises():
    with pytest.raises(ValueError, match="gattanet"):
        noise_sweep(lambda s, seed: {"baseline": 0.5}, [0.0], [0])


def test_sweep_of_real_toy_gattanet_is_repeatable():
    torch.manual_seed(0)
    backbone = build_backbone("toy", 10, 1)
    model = GAttANet(backbone, GlobalAttention(backbone.taps(), 4)).eval()
    with torch.no_grad():
        model.attention.alpha.fill_(0.5)
    g = torch.Generator().manual_seed(1)
    data = TensorData(images=torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8, generator=g),
                      labels=torch.randint(0, 10, (16,), generator=g), mean=(0.5,), std=(0.25,),
                      classes=tuple(str(c) for c in range(10)))

    def evaluate_at(sigma: float, seed: int) -> dict:
        loader = TensorLoader(data, batch_size=8, sigma=sigma, noise_seed=seed)
        acc = accuracies({"baseline": model.baseline, "gattanet": model}, loader)
        return {name: a["top1"] for name, a in acc.items()}

    sigmas, seeds = [0.0, 0.05, 0.2], [0, 1]
    first = noise_sweep(evaluate_at, sigmas, seeds)
    assert first == noise_sweep(evaluate_at, sigmas, seeds)
    assert all(0 <= a <= 1 for row in first["gattanet"]["per_seed"] for a in row)
