"""The related-work adapters: identity at init, frozen backbone, matched parameter budgets."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gattanet.adapters import (ADAPTERS, UNMATCHABLE, AdaptedModel, adapter_params, build_adapter,
                               match_width, wider_toy_widths, within_budget)
from gattanet.adapters.budget import HEADS
from gattanet.adapters.modules import GatherExcite, axial_positional, relative_logits
from gattanet.models.attention import GlobalAttention
from gattanet.models.backbone import Backbone
from gattanet.models.taps import Tap
from gattanet.models.toy import ToyCNN

pytestmark = pytest.mark.usefixtures("one_thread")


SMALL_WIDTH = {"eca": 3, "aa-conv": HEADS, "gsa": 2 * HEADS}


def small_width(method: str) -> int:
    return SMALL_WIDTH.get(method, 3)


class TinyBackbone(Backbone):
    """Two conv taps (the first with BatchNorm) and a dense logits tap, with dropout: the protocol in small."""

    arch, in_channels, num_classes, input_size = "tiny", 1, 3, 8
    tap_names = ("c1", "c2", "logits")

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 2 * 2, 3)
        self.drop = nn.Dropout(0.5)

    def run(self, x, transforms=None):
        t, acts = self._transforms(transforms), []
        x = self._tap(F.relu(self.bn1(self.conv1(x))), t[0], acts)
        x = self._tap(F.relu(self.conv2(F.max_pool2d(x, 2))), t[1], acts)
        x = self._tap(self.fc(self.drop(F.max_pool2d(x, 2).flatten(1))), t[2], acts)
        return x, acts


def fashion_toy_taps() -> list[Tap]:
    with torch.device("meta"):
        return ToyCNN(in_channels=1, num_classes=10).taps()


def gattanet_formula(taps: list[Tap], d: int) -> int:
    """2·Σ_conv(C·d + d) + 2·Σ_dense(N·d) + n_taps (1×1 convs with bias, unit projections, α)."""
    conv = sum(t.channels * d + d for t in taps if t.kind == "conv")
    dense = sum(t.channels * d for t in taps if t.kind == "dense")
    return 2 * conv + 2 * dense + len(taps)


# --- the modules -------------------------------------------------------------------------------

@pytest.mark.parametrize("method", list(ADAPTERS))
@pytest.mark.parametrize("train", [True, False])
def test_adapter_keeps_shape_and_is_identity_at_init(method, train):
    torch.manual_seed(0)
    adapter = build_adapter(method, 8, small_width(method), (6, 5)).train(train)
    x = torch.randn(2, 8, 6, 5)
    y = adapter(x)
    assert y.shape == x.shape
    assert torch.equal(y, x)


@pytest.mark.parametrize("method", list(ADAPTERS))
def test_adapter_leaves_identity_when_trained(method):
    """The zero-init gate/projection gets a gradient, so training moves the adapter off the identity."""
    torch.manual_seed(0)
    adapter = build_adapter(method, 8, small_width(method), (6, 5))
    x, target = torch.randn(4, 8, 6, 5), torch.randn(4, 8, 6, 5)
    opt = torch.optim.Adam(adapter.parameters(), lr=1e-2)
    for _ in range(2):  # the gated ones need γ to move first before their module's weights get a gradient
        opt.zero_grad()
        F.mse_loss(adapter(x), target).backward()
        opt.step()
    adapter.eval()
    assert not torch.allclose(adapter(x), x)


def test_relative_logits_match_the_definition():
    torch.manual_seed(0)
    B, n, d, H, W = 1, 2, 3, 3, 4
    q = torch.randn(B, n, d, H, W)
    rel_h, rel_w = torch.randn(2 * H - 1, d), torch.randn(2 * W - 1, d)
    got = relative_logits(q, rel_h, rel_w)
    want = torch.zeros(B, n, H * W, H * W)
    for yi in range(H):
        for xi in range(W):
            for yj in range(H):
                for xj in range(W):
                    r = rel_h[yj - yi + H - 1] + rel_w[xj - xi + W - 1]
                    want[:, :, yi * W + xi, yj * W + xj] = torch.einsum("bnd,d->bn", q[..., yi, xi], r)
    torch.testing.assert_close(got, want)


def test_relative_logits_accept_smaller_inputs_only():
    q = torch.randn(1, 1, 2, 3, 3)
    relative_logits(q, torch.randn(2 * 4 - 1, 2), torch.randn(2 * 4 - 1, 2))  # built for 4×4: fine
    with pytest.raises(ValueError, match="exceeds"):
        relative_logits(q, torch.randn(2 * 2 - 1, 2), torch.randn(2 * 4 - 1, 2))


@pytest.mark.parametrize("axis", [3, 4])
def test_axial_positional_matches_the_definition(axis):
    torch.manual_seed(0)
    B, n, k, dv, H, W = 1, 2, 3, 2, 3, 4
    q, v = torch.randn(B, n, k, H, W), torch.randn(B, n, dv, H, W)
    side = H if axis == 3 else W
    rel = torch.randn(2 * side - 1, k)
    got = axial_positional(q, v, rel, axis)
    want = torch.zeros(B, n, dv, H, W)
    for a in range(H):
        for b in range(W):
            for j in range(side):
                off = j - (a if axis == 3 else b)
                w = torch.einsum("bnk,k->bn", q[..., a, b], rel[off + side - 1])
                src = v[..., j, b] if axis == 3 else v[..., a, j]
                want[..., a, b] += w[..., None] * src
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("method, width, match", [
    ("se", 0, "integer >= 1"), ("cbam", 2.5, "integer >= 1"), ("eca", 4, "odd"), ("eca", 17, "odd"),
    ("aa-conv", HEADS + 1, "multiple of heads"), ("gsa", HEADS - 1, "multiple of heads"),
])
def test_bad_width_is_a_clear_error(method, width, match):
    with pytest.raises(ValueError, match=match):
        build_adapter(method, 8, width, (4, 4))


def test_unknown_method_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed: se, eca, cbam, gather-excite, non-local, aa-conv, gsa"):
        build_adapter("bam", 8, 4, (4, 4))


@pytest.mark.parametrize("extent", [1, 6])
def test_gather_excite_extent_must_be_a_power_of_two(extent):
    with pytest.raises(ValueError, match="power of two"):
        GatherExcite(8, 4, extent=extent)


# --- the adapted model -------------------------------------------------------------------------

def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("method", list(ADAPTERS))
def test_training_step_changes_only_the_adapters(method):
    torch.manual_seed(0)
    backbone = TinyBackbone()
    backbone.train()
    backbone(torch.randn(16, 1, 8, 8))  # give BN non-trivial running statistics
    model = AdaptedModel(backbone, method, small_width(method))
    assert set(model.adapters) == {"c1", "c2"}  # conv taps only
    before_backbone, before_adapters = snapshot(backbone), snapshot(model.adapters)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    model.train()
    assert not backbone.training and model.adapters.training
    assert torch.equal(model(x), model.baseline(x))  # identity at init: the baseline's logits exactly
    opt = torch.optim.Adam(model.adapter_parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    after = snapshot(backbone)
    assert after.keys() == before_backbone.keys()
    assert all(torch.equal(after[k], before_backbone[k]) for k in after)  # weights and BN statistics
    assert all(p.grad is None and not p.requires_grad for p in backbone.parameters())
    changed = snapshot(model.adapters)
    assert any(not torch.equal(changed[k], before_adapters[k]) for k in changed)
    assert {id(p) for p in model.adapter_parameters()} == {id(p) for p in model.parameters() if p.requires_grad}


@pytest.mark.parametrize("method", list(ADAPTERS))
def test_on_the_real_toy_adapters_start_as_the_baseline(method):
    torch.manual_seed(0)
    width = small_width(method)
    model = AdaptedModel(ToyCNN(in_channels=1, num_classes=10, input_size=16), method, width)
    assert list(model.adapters) == ["conv1", "conv2", "conv3"]
    assert adapter_params(method, model.taps, width) == sum(p.numel() for p in model.adapter_parameters())
    x = torch.rand(2, 1, 16, 16)
    model.train()
    assert torch.equal(model(x), model.baseline(x))
    F.cross_entropy(model(x), torch.tensor([1, 7])).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adapter_parameters())


def test_backbone_without_conv_taps_is_refused():
    class DenseOnly(Backbone):
        arch, in_channels, num_classes, input_size, tap_names = "dense", 1, 2, 4, ("logits",)

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 2)

        def run(self, x, transforms=None):
            acts = []
            return self._tap(self.fc(x.flatten(1)), self._transforms(transforms)[0], acts), acts

    with pytest.raises(ValueError, match="no conv taps"):
        AdaptedModel(DenseOnly(), "se", 4)


# --- parameter budgets -------------------------------------------------------------------------

def test_fashion_toy_d16_widths_match_gattanet_within_10_percent():
    taps, d = fashion_toy_taps(), 16
    target = GlobalAttention(taps, d).count_parameters()
    assert target == gattanet_formula(taps, d) == 15_781  # the paper's 15.8K (DESIGN.md)
    for method in ADAPTERS:
        width, params = match_width(method, taps, target)
        assert params == adapter_params(method, taps, width)
        if method in UNMATCHABLE:
            assert params < 0.1 * target and not within_budget(params, target)
        else:
            assert within_budget(params, target), (method, width, params, target)


@pytest.mark.parametrize("method", ["se", "gather-excite", "aa-conv", "eca"])
def test_match_width_picks_the_closest_valid_width(method):
    taps, target = fashion_toy_taps(), 9_000
    width, params = match_width(method, taps, target)
    step = {"eca": 2, "aa-conv": HEADS}.get(method, 1)
    for other in (width - step, width + step):
        try:
            other_params = adapter_params(method, taps, other)
        except ValueError:  # outside the valid widths
            continue
        assert abs(other_params - target) >= abs(params - target)


def test_budget_errors_name_the_problem():
    taps = fashion_toy_taps()
    with pytest.raises(ValueError, match="allowed"):
        match_width("bam", taps, 1000)
    with pytest.raises(ValueError, match="target"):
        match_width("se", taps, 0)
    with pytest.raises(ValueError, match="conv taps"):
        adapter_params("se", [t for t in taps if t.kind == "dense"], 4)
    with pytest.raises(ValueError, match="tol"):
        within_budget(100, 100, tol=1.5)
    assert within_budget(110, 100) and within_budget(90, 100) and not within_budget(111, 100)


@pytest.mark.parametrize("in_channels, num_classes, d", [(1, 10, 16), (3, 100, 64)])
def test_wider_toy_matches_toy_plus_gattanet_within_2_percent(in_channels, num_classes, d):
    toy = ToyCNN(in_channels=in_channels, num_classes=num_classes)
    target = sum(p.numel() for p in toy.parameters()) + GlobalAttention(toy.taps(), d).count_parameters()
    widths, hidden, params = wider_toy_widths(target, in_channels, num_classes)
    wider = ToyCNN(in_channels, num_classes, widths, hidden)
    assert params == sum(p.numel() for p in wider.parameters())
    assert abs(params - target) <= 0.02 * target
    scale = hidden / 256
    assert scale > 1 and all(abs(w - b * scale) <= 0.5 for w, b in zip(widths, (32, 64, 128)))
