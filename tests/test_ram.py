"""Recurrent Models of Visual Attention (gattanet.adapters.ram): the parameter count against the paper's
layers, the glimpse sensor on known images, the scaled model at the plain toy's size, the policy's
sampling and the hybrid loss's gradients against their formulas."""

import pytest
import torch
import torch.nn.functional as F

from gattanet.adapters.budget import BUDGET_TOL
from gattanet.adapters.ram import LOCATION_STD, RAM, build_ram, glimpse, ram_params, ram_sizes
from gattanet.adapters.scratch import count_params, toy_total

pytestmark = pytest.mark.usefixtures("one_thread")


def test_paper_sizes_counted_by_hand():
    # 1 channel, 8×8 patch, 1 scale, 10 classes: h_g 65·128, h_l 3·128, g 2·129·256, core 2·257·256,
    # location 257·2, action 257·10, baseline 257
    hand = 65 * 128 + 3 * 128 + 2 * 129 * 256 + 2 * 257 * 256 + 257 * 2 + 257 * 10 + 257
    assert ram_params(1, 10) == hand == count_params(RAM(1, 10)) == 209_677


@pytest.mark.parametrize("channels,classes,a,b,scales", [(1, 10, 128, 256, 1), (3, 100, 50, 90, 3),
                                                          (3, 10, 7, 13, 2)])
def test_formula_matches_the_built_model(channels, classes, a, b, scales):
    assert count_params(RAM(channels, classes, a, b, scales=scales)) == ram_params(channels, classes, a, b,
                                                                                   scales=scales)


@pytest.mark.parametrize("channels,classes", [(1, 10), (3, 10), (3, 100)])
def test_scaled_to_the_plain_toy(channels, classes):
    total = toy_total(channels, classes)
    a, b, params = ram_sizes(total, channels, classes)
    model = build_ram(channels, classes, total)
    assert (model.glimpse_hidden, model.core_hidden) == (a, b) and b == round(2 * a)
    assert count_params(model) == params
    assert abs(params - total) <= BUDGET_TOL * total
    assert ram_params(channels, classes, a - 1, round(2 * (a - 1))) < params  # one grid step smaller is smaller


def test_ram_sizes_refuses_a_bad_target():
    with pytest.raises(ValueError, match="integer >= 1"):
        ram_sizes(0, 1, 10)


def test_glimpse_at_the_centre_is_the_central_crop():
    x = torch.randn(2, 3, 32, 32)
    out = glimpse(x, torch.zeros(2, 2), patch=8, scales=3)
    assert out.shape == (2, 9, 8, 8)
    torch.testing.assert_close(out[:, :3], x[..., 12:20, 12:20])
    torch.testing.assert_close(out[:, 3:6], F.avg_pool2d(x[..., 8:24, 8:24], 2))
    torch.testing.assert_close(out[:, 6:], F.avg_pool2d(x, 4))


def test_glimpse_follows_the_location_and_pads_with_zeros():
    x = torch.randn(1, 1, 32, 32)
    # x = +0.25 is 4 pixels right of the centre, y = -0.5 is 8 pixels up
    moved = glimpse(x, torch.tensor([[0.25, -0.5]]), patch=8)
    torch.testing.assert_close(moved[0, 0], x[0, 0, 4:12, 16:24])
    corner = glimpse(x, torch.tensor([[1.0, 1.0]]), patch=8)  # centred on the bottom-right corner
    torch.testing.assert_close(corner[0, 0, :4, :4], x[0, 0, 28:, 28:])
    assert corner[0, 0, 4:].abs().sum() == 0 and corner[0, 0, :, 4:].abs().sum() == 0


def test_evaluation_is_deterministic_and_training_keeps_a_trace():
    model = RAM(1, 10, 16, 32, glimpses=4)
    x = torch.rand(5, 1, 32, 32)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    assert model(x).shape == (5, 10)
    model.train()
    logits = model(x)
    assert model.trace.log_pi.shape == model.trace.baseline.shape == (5, 3)
    assert logits.shape == (5, 10)


def test_one_glimpse_samples_nothing():
    model = RAM(1, 10, 8, 16, glimpses=1).train()
    logits = model(torch.rand(3, 1, 32, 32))
    assert model.trace.log_pi.shape == (3, 0)
    assert model.extra_loss(logits, torch.zeros(3, dtype=torch.long)) == 0


def test_the_locations_depend_on_the_image():
    torch.manual_seed(0)
    model = RAM(1, 10, 16, 32, glimpses=3).eval()
    x = torch.zeros(2, 1, 32, 32)
    x[1, :, 12:20, 12:20] = 1.0  # only the first glimpse (at the centre) tells them apart
    logits = model(x)
    assert not torch.allclose(logits[0], logits[1])


def test_reinforce_gradient_is_the_score_function_times_the_advantage():
    torch.manual_seed(3)
    model = RAM(1, 10, 16, 32, glimpses=2).train()  # one sampled location
    x, y = torch.rand(6, 1, 32, 32), torch.randint(0, 10, (6,))
    torch.manual_seed(7)
    logits = model(x)
    torch.manual_seed(7)
    eps = torch.randn(6, 2)  # the forward's one random draw: l = μ + σ ε
    model.zero_grad()
    model.extra_loss(logits, y).backward()
    reward = (logits.argmax(1) == y).float()
    advantage = reward - model.trace.baseline[:, 0].detach()
    # −mean_b (R − b) ∂ log N(l; μ, σ) / ∂μ = −mean_b (R − b)(l − μ)/σ² = −mean_b (R − b) ε/σ
    expected = -(advantage[:, None] * eps / LOCATION_STD).mean(0)
    torch.testing.assert_close(model.locator.bias.grad, expected)
    # the baseline regresses on R: ∂/∂b mean (R − b)² = −2 mean (R − b)
    torch.testing.assert_close(model.baseline.bias.grad, -2 * advantage.mean(0, keepdim=True))
    assert model.action.weight.grad is None or model.action.weight.grad.abs().sum() == 0


def test_extra_loss_needs_a_training_forward():
    model = RAM(1, 10, 8, 16).eval()
    with pytest.raises(RuntimeError, match="training-mode forward"):
        model.extra_loss(model(torch.rand(2, 1, 32, 32)), torch.zeros(2, dtype=torch.long))


def test_the_training_step_trains_the_model():
    from gattanet.engine.train import Step, TrainConfig

    torch.manual_seed(0)
    model = RAM(1, 2, 16, 32, glimpses=2).train()
    x = torch.rand(32, 1, 32, 32)
    y = (x[:, 0, 12:20, 12:20].mean((1, 2)) > 0.5).long()  # visible in the first (central) glimpse
    step = Step(model, model.parameters(), TrainConfig(1, 1, lr=1e-2))
    losses = []
    for i in range(60):
        step(x, y, 1, i)
        with torch.no_grad():
            losses.append(float(F.cross_entropy(model.eval()(x), y)))
        model.train()
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("kwargs", [{"glimpses": 0}, {"patch": 0}, {"scales": 0}, {"std": 0.0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="need glimpses"):
        RAM(1, 10, **kwargs)


def test_the_training_step_adds_the_models_own_loss_terms():
    """fit's Step trains a RAM on the hybrid loss (its location policy learns only through REINFORCE);
    a model without extra_loss keeps plain cross-entropy."""
    from gattanet.engine.train import Step, TrainConfig

    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 32, 32), torch.randint(0, 10, (8,))
    one, other = RAM(1, 10, 16, 32, glimpses=3).train(), RAM(1, 10, 16, 32, glimpses=3).train()
    other.load_state_dict(one.state_dict())
    torch.manual_seed(5)
    Step(one, one.parameters(), TrainConfig(1, 1, lr=1e-3))(x, y, 1, 1)
    torch.manual_seed(5)
    logits = other(x)  # the paper's hybrid loss as written: cross-entropy of the action plus extra_loss
    (F.cross_entropy(logits, y) + other.extra_loss(logits, y)).backward()
    for (name, p), q in zip(one.named_parameters(), other.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    assert one.locator.weight.grad.abs().sum() > 0

    plain = torch.nn.Linear(4, 3)
    step = Step(plain, plain.parameters(), TrainConfig(1, 1, lr=1e-3))
    xs, ys = torch.rand(5, 4), torch.randint(0, 3, (5,))
    with torch.no_grad():
        expected = float(F.cross_entropy(plain(xs), ys))  # before the step moves the weights
    assert step.extra_loss is None and step(xs, ys, 1, 1)[0] == pytest.approx(expected)


def test_runs_under_bf16_autocast_with_an_fp32_policy():
    torch.manual_seed(0)
    model = RAM(1, 10, 16, 32, glimpses=3).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.rand(4, 1, 32, 32))
        loss = model.extra_loss(logits.float(), torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert model.trace.log_pi.dtype == model.trace.baseline.dtype == torch.float32
    assert torch.isfinite(model.locator.weight.grad).all()
