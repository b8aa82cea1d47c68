"""The add-on track: each module's count against its paper's formula, identity at init on the frozen
backbone, shapes on the toy's and ResNet18's taps, matched budgets within ±5 %."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gattanet.adapters import (ADDONS, BUDGET_TOL, ADDON_DEVIATIONS, MATCHING_RULE, UNMATCHABLE, AdaptedModel,
                               adapter_params, addon_rows, build_addon, match_width, wider_toy_widths,
                               within_budget)
from gattanet.adapters.addons import eca_kernel, reduced
from gattanet.adapters.budget import knob_candidates
from gattanet.adapters.modules import AttentionAugmentation, GatherExcite, axial_positional
from gattanet.models.attention import GlobalAttention
from gattanet.models.backbone import Backbone
from gattanet.models.resnet import ResNetBackbone
from gattanet.models.spec import AttentionSpec
from gattanet.models.taps import Tap
from gattanet.models.toy import ToyCNN

pytestmark = pytest.mark.usefixtures("one_thread")

METHODS = list(ADDONS)


class TinyBackbone(Backbone):
    """Two conv taps (the first with BatchNorm), a dense hidden tap and a dense logits tap, with dropout:
    the protocol in small."""

    arch, in_channels, num_classes, input_size = "tiny", 1, 3, 8
    tap_names = ("c1", "c2", "hidden", "logits")

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(6 * 2 * 2, 5), nn.Linear(5, 3)
        self.drop = nn.Dropout(0.5)

    def segments(self):
        return [lambda x: F.relu(self.bn1(self.conv1(x))), lambda x: F.relu(self.conv2(F.max_pool2d(x, 2))),
                lambda x: F.relu(self.fc1(self.drop(F.max_pool2d(x, 2).flatten(1)))),
                lambda x: self.fc2(self.drop(x))]


def meta_taps(make) -> list[Tap]:
    with torch.device("meta"):
        return make().taps()


def fashion_toy_taps() -> list[Tap]:
    return meta_taps(lambda: ToyCNN(in_channels=1, num_classes=10))


TAP_SETS = {
    "toy-fmnist": fashion_toy_taps,
    "toy-cifar100": lambda: meta_taps(lambda: ToyCNN(in_channels=3, num_classes=100)),
    "resnet18-224": lambda: meta_taps(lambda: ResNetBackbone("resnet18", num_classes=10)),
}


def small_knob(method: str):
    """A knob that gives small modules on the tiny backbone (ECA has none)."""
    return {"reduction": 2, "ratio": 2.0, "rank": 3, "fixed": None}[ADDONS[method].knob_kind]


def gattanet_formula(taps: list[Tap], d: int) -> int:
    """2·Σ_conv(C·d + d) + 2·Σ_dense(N·d) + n_taps (1×1 convs with bias, unit projections, α)."""
    conv = sum(t.channels * d + d for t in taps if t.kind == "conv")
    dense = sum(t.channels * d for t in taps if t.kind == "dense")
    return 2 * conv + 2 * dense + len(taps)


# --- the papers' definitions -------------------------------------------------------------------

def test_toy_and_resnet_taps_are_the_widths_the_counts_are_checked_on():
    assert [t.channels for t in fashion_toy_taps() if t.kind == "conv"] == [32, 64, 128]
    assert [t.channels for t in TAP_SETS["resnet18-224"]() if t.kind == "conv"] == [64, 128, 256, 512]


def test_eca_kernel_is_the_adaptive_rule_in_timm_and_in_the_formula():
    """k = |log₂(C)/2 + 1/2|_odd: 3, 3, 5 on the toy (the issue's figures), 3, 5, 5, 5 on ResNet18."""
    def paper_k(c):  # the ECA paper's code, written out
        t = int(abs((math.log(c, 2) + 1) / 2))
        return t if t % 2 else t + 1

    for taps, expected in ((fashion_toy_taps(), [3, 3, 5]), (TAP_SETS["resnet18-224"](), [3, 5, 5, 5])):
        conv = [t for t in taps if t.kind == "conv"]
        assert [paper_k(t.channels) for t in conv] == [eca_kernel(t.channels) for t in conv] == expected
        built = build_addon("eca", taps, None)
        assert [built[t.name].module.conv.kernel_size[0] for t in conv] == expected


def test_reduction_ratio_16_gives_the_papers_hidden_widths():
    """SE/CBAM/BAM/GE at r = 16 on the toy: C/16 = 2, 4, 8 (timm's default divisor 8 would give 8, 8, 8)."""
    taps = fashion_toy_taps()
    for method in ("se", "cbam", "bam", "gather-excite"):
        assert list(ADDONS[method].widths(taps, 16).values()) == [2, 4, 8]
    se = build_addon("se", taps, 16)
    assert [se[n].module.fc1.out_channels for n in ("conv1", "conv2", "conv3")] == [2, 4, 8]
    assert reduced(3, 16) == 1  # the floor


@pytest.mark.parametrize("tap_set", list(TAP_SETS))
@pytest.mark.parametrize("method", METHODS)
def test_parameter_count_equals_the_papers_formula(method, tap_set):
    """At the paper's knob and at the knob matched to GAttANet's d = 16 (and a third value)."""
    taps = TAP_SETS[tap_set]()
    a = ADDONS[method]
    target = AttentionSpec(16).trainable_params(taps)
    knobs = {match_width(method, taps, target)[0], a.paper_knob}
    if a.knob_kind == "rank":
        knobs |= {1, 40}
    elif a.knob_kind != "fixed":
        knobs.add(small_knob(method))
    for knob in knobs - {None} or {None}:
        assert adapter_params(method, taps, knob) == a.formula(taps, knob), (method, knob)


def test_timm_relative_logits_are_bello_et_als_definition():
    """timm's PosEmbedRel (used by aa-conv): logit(i, j) += q_i·r^W_{x_j − x_i} + q_i·r^H_{y_j − y_i}."""
    from timm.layers.bottleneck_attn import PosEmbedRel

    torch.manual_seed(0)
    B, d, H, W = 2, 3, 3, 4
    pos = PosEmbedRel((H, W), d, scale=1.0)
    q = torch.randn(B, H * W, d)
    got = pos(q)
    want = torch.zeros(B, H * W, H * W)
    for yi in range(H):
        for xi in range(W):
            for yj in range(H):
                for xj in range(W):
                    r = pos.height_rel[yj - yi + H - 1] + pos.width_rel[xj - xi + W - 1]
                    want[:, yi * W + xi, yj * W + xj] = q[:, yi * W + xi] @ r
    torch.testing.assert_close(got, want)


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


def test_every_method_states_its_source_knob_identity_and_deviations():
    for name, a in ADDONS.items():
        assert a.title and a.source and a.knob and a.identity, name
        assert name in ADDON_DEVIATIONS
        assert (a.source.startswith("timm.")) != (a.source.startswith("own")), name
    assert ADDON_DEVIATIONS["*"] and any("narrow" in d for d in ADDON_DEVIATIONS["aa-conv"])


# --- identity at init, shapes, the frozen backbone ----------------------------------------------

def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("method", METHODS)
def test_training_step_changes_only_the_addon(method):
    torch.manual_seed(0)
    backbone = TinyBackbone()
    backbone.train()
    backbone(torch.randn(16, 1, 8, 8))  # give BN non-trivial running statistics
    model = AdaptedModel(backbone, method, small_knob(method))
    if ADDONS[method].head_module is None:
        assert set(model.adapters) == {"c1", "c2"}  # conv taps only
    before_backbone, before_adapters = snapshot(backbone), snapshot(model.adapters)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    model.train()
    assert not backbone.training and model.adapters.training
    assert torch.equal(model(x), model.baseline(x))  # identity at init: the baseline's logits exactly
    opt = torch.optim.Adam(model.adapter_parameters(), lr=1e-2)
    for _ in range(3):  # a zero gate moves first, then the module behind it gets a gradient
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
    model.eval()
    assert not torch.allclose(model(x), model.baseline(x))  # trained off the identity


@pytest.mark.parametrize("method", METHODS)
def test_on_the_toy_at_its_matched_size_the_addon_starts_as_the_backbone(method):
    """The fashion toy (its real 32×32 taps) with the add-on GAttANet's d = 16 budget gives it."""
    torch.manual_seed(0)
    backbone = ToyCNN(in_channels=1, num_classes=10)
    taps = backbone.taps()
    knob, params = match_width(method, taps, AttentionSpec(16).trainable_params(taps))
    model = AdaptedModel(backbone, method, knob)
    assert sum(p.numel() for p in model.adapter_parameters()) == params
    x = torch.rand(3, 1, 32, 32)
    for train in (True, False):
        model.train(train)
        assert torch.equal(model(x), model.baseline(x))
    F.cross_entropy(model.train()(x), torch.tensor([1, 7, 3])).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adapter_parameters())


@pytest.mark.parametrize("method", METHODS)
def test_on_resnet18_taps_shapes_are_kept_and_the_addon_starts_as_the_backbone(method):
    """ResNet18 (random weights, 64 × 64 input: taps of 64..512 channels at 16..2 pixels), matched to d = 16."""
    torch.manual_seed(0)
    backbone = ResNetBackbone("resnet18", num_classes=10, input_size=64).eval()
    taps = backbone.taps()
    knob, _ = match_width(method, taps, AttentionSpec(16).trainable_params(taps))
    model = AdaptedModel(backbone, method, knob)
    x = torch.rand(2, 3, 64, 64)
    if ADDONS[method].head_module is None:
        _, acts = backbone.run(x)
        for t, a in zip(taps, acts):
            if t.kind == "conv":
                assert model.adapters[t.name].train()(a).shape == a.shape == (2, *t.shape)
    model.train()
    assert torch.equal(model(x), model.baseline(x))


def test_backbone_without_conv_taps_is_refused():
    class DenseOnly(Backbone):
        arch, in_channels, num_classes, input_size, tap_names = "dense", 1, 2, 4, ("logits",)

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 2)

        def segments(self):
            return [lambda x: self.fc(x.flatten(1))]

    with pytest.raises(ValueError, match="no conv taps"):
        AdaptedModel(DenseOnly(), "se", 4)


def test_ltpa_needs_a_dense_penultimate_tap():
    taps = [Tap("c", "conv", (4, 4, 4)), Tap("logits", "dense", (3,))]
    with pytest.raises(ValueError, match="dense penultimate"):
        build_addon("ltpa", taps, 2)


@pytest.mark.parametrize("method, knob, match", [
    ("se", 0, "number > 0"), ("cbam", "4", "number > 0"), ("aa-conv", -1.0, "number > 0"),
    ("ltpa", 2.5, "integer"), ("bam", True, "number > 0"),
])
def test_bad_knob_is_a_clear_error(method, knob, match):
    with pytest.raises(ValueError, match=match):
        build_addon(method, fashion_toy_taps(), knob)


def test_unknown_method_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed: " + ", ".join(METHODS)):
        build_addon("sk", fashion_toy_taps(), 4)


@pytest.mark.parametrize("extent", [1, 6])
def test_gather_excite_extent_must_be_a_power_of_two(extent):
    with pytest.raises(ValueError, match="power of two"):
        GatherExcite(8, 4, extent=extent)


# --- parameter budgets -------------------------------------------------------------------------

@pytest.mark.parametrize("tap_set, d", [("toy-fmnist", 16), ("toy-fmnist", 64), ("toy-cifar100", 16),
                                        ("resnet18-224", 16)])
def test_matched_addons_are_within_5_percent_of_gattanet(tap_set, d):
    taps = TAP_SETS[tap_set]()
    target = GlobalAttention(taps, d).count_parameters()
    assert target == gattanet_formula(taps, d)
    for method in METHODS:
        knob, params = match_width(method, taps, target)
        assert params == adapter_params(method, taps, knob)
        if method in UNMATCHABLE:
            assert knob is None and params < 0.01 * target and not within_budget(params, target)
        elif within_budget(params, target):
            continue
        else:  # only when its smallest size is already above the budget (LTPA's classifier at 100 classes)
            assert (method, tap_set) == ("ltpa", "toy-cifar100")
            smallest = knob_candidates(method, taps, 8)[0]
            assert knob == smallest and params > (1 + BUDGET_TOL) * target
            classes, local = taps[-1].channels, sum(t.channels for t in taps if t.kind == "conv")
            assert classes * local > target  # its zero-init classifier alone (K·ΣC_s weights)
    assert BUDGET_TOL == 0.05 and UNMATCHABLE == ("eca",)


def test_matching_rule_states_the_toys_dense_share():
    """The rule's figures: GAttANet's 15,781 parameters at d = 16 on the fashion toy, 54 % on its dense taps."""
    taps, d = fashion_toy_taps(), 16
    total = GlobalAttention(taps, d).count_parameters()
    dense = sum(2 * t.channels * d + 1 for t in taps if t.kind == "dense")  # unit projections and α
    assert f"{total:,}" in MATCHING_RULE and f"{round(100 * dense / total)} %" in MATCHING_RULE


@pytest.mark.parametrize("method", ["se", "bam", "non-local", "aa-conv", "gsa", "ran-mask", "ltpa"])
def test_match_width_picks_the_closest_candidate(method):
    taps, target = fashion_toy_taps(), 9_000
    knob, params = match_width(method, taps, target)
    candidates = knob_candidates(method, taps, 32)
    counts = [ADDONS[method].formula(taps, k) for k in candidates]  # = the modules' counts (tested above)
    assert counts == sorted(counts)  # the bisection's premise: modules grow along the candidates
    assert min(abs(c - target) for c in counts) == abs(params - target)


def test_budget_errors_name_the_problem():
    taps = fashion_toy_taps()
    with pytest.raises(ValueError, match="allowed"):
        match_width("sk", taps, 1000)
    with pytest.raises(ValueError, match="target"):
        match_width("se", taps, 0)
    with pytest.raises(ValueError, match="conv taps"):
        adapter_params("se", [t for t in taps if t.kind == "dense"], 4)
    with pytest.raises(ValueError, match="tol"):
        within_budget(100, 100, tol=1.5)
    assert within_budget(105, 100) and within_budget(95, 100) and not within_budget(106, 100)


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


def test_addon_rows_give_the_report_each_methods_count_beside_its_formula():
    taps = fashion_toy_taps()
    target = AttentionSpec(16).trainable_params(taps)
    rows = {r["method"]: r for r in addon_rows(taps, target)}
    assert list(rows) == METHODS
    for name, r in rows.items():
        assert r["params"] == r["formula"] == adapter_params(name, taps, r["matched_knob"])
        assert r["within_budget"] == (name != "eca") and r["matchable"] == (name != "eca")
    assert rows["se"]["paper_params"] == ADDONS["se"].formula(taps, 16) and rows["ltpa"]["paper_params"] is None


@pytest.mark.slow
def test_new_addons_run_through_dvc_repro_on_the_tiny_profile(tmp_path, tiny_params):
    """A feature-map add-on (BAM) and the head add-on (LTPA) through `dvc repro baselines@…` in a fresh copy:
    each record's count is its formula at the recorded knob, within ±5 % of GAttANet's."""
    import json

    from tests.helpers import make_project, sh

    tiny_params["baselines"]["methods"] = ["bam", "ltpa"]
    repo = make_project(tmp_path, tiny_params)
    sh(["dvc", "repro", "baselines@bam", "baselines@ltpa"], repo)
    taps = fashion_toy_taps()
    assert tiny_params["attention"][tiny_params["baselines"]["run"]]["attn_dim"] == 16
    for method in ("bam", "ltpa"):
        b = json.loads((repo / f"results/baselines/{method}.json").read_text())
        assert b["method"] == method and b["gattanet_params"] == AttentionSpec(16).trainable_params(taps)
        assert b["trainable_params"] == ADDONS[method].formula(taps, b["width"])
        assert b["matchable"] and b["within_budget"] and len(b["epochs_run"]) == len(b["seeds"])


# --- self-attention on the largest maps: Bello et al.'s downsampling ---------------------------------

def test_aa_and_mhsa_attend_over_the_pooled_map_only_above_side_16():
    """The toy's 32×32 tap is downsampled (AA's relative embeddings then span 16×16), its 16×16 and 8×8 taps are
    not; on ResNet18 at 224 the 56×56 and 28×28 taps are, the 14×14 and 7×7 not (the paper downsampled its 28×28
    stage alone, applying AA from 28×28 down)."""
    from gattanet.adapters.addons import attention_size, downsampled

    toy = [t for t in fashion_toy_taps() if t.kind == "conv"]
    assert [downsampled(t) for t in toy] == [True, False, False]
    assert [attention_size(t) for t in toy] == [(16, 16), (16, 16), (8, 8)]
    resnet = [t for t in TAP_SETS["resnet18-224"]() if t.kind == "conv"]
    assert [(t.shape[1], downsampled(t)) for t in resnet] == [(56, True), (28, True), (14, False), (7, False)]
    aa = build_addon("aa-conv", toy, 0.2)
    first = next(mod for mod in aa.modules() if isinstance(mod, AttentionAugmentation))
    assert first.downsample and first.attn.pos_embed.height == 16 and first.attn.pos_embed.width == 16


def test_the_pooling_is_a_3x3_mean_with_stride_2_and_the_upsampling_bilinear():
    from gattanet.adapters.modules import avg_pool_3x3_s2, pooled_size, upsample_bilinear

    x = torch.randn(1, 2, 32, 32)
    z = avg_pool_3x3_s2(x)
    assert z.shape[-2:] == pooled_size((32, 32)) == (16, 16) and pooled_size((7, 9)) == (4, 5)
    assert torch.allclose(z[0, :, 3, 5], x[0, :, 5:8, 9:12].mean((1, 2)), atol=1e-6)  # window centred at 2·(3, 5)
    assert torch.allclose(z[0, :, 0, 0], x[0, :, 0:2, 0:2].mean((1, 2)), atol=1e-6)  # the padding is not counted
    up = upsample_bilinear(z, (32, 32))
    assert up.shape[-2:] == (32, 32)
    # output pixel i reads source coordinate (i + 0.5)/2 − 0.5: row 3 → 1.25, column 5 → 2.25
    assert torch.allclose(up[0, :, 3, 5], 0.75 * (0.75 * z[0, :, 1, 2] + 0.25 * z[0, :, 1, 3])
                          + 0.25 * (0.75 * z[0, :, 2, 2] + 0.25 * z[0, :, 2, 3]), atol=1e-6)


def test_downsampled_mhsa_on_a_uniform_map_gives_what_full_attention_gives():
    """Self-attention without positions over a spatially uniform map: every position attends to identical keys, so
    the pooled map (uniform too: the padding is not counted) and the upsampled output change nothing."""
    from gattanet.adapters.modules import MultiHeadSelfAttention

    torch.manual_seed(0)
    full, pooled = MultiHeadSelfAttention(8, 16, 8), MultiHeadSelfAttention(8, 16, 8, downsample=True)
    nn.init.normal_(full.proj.weight)  # not the identity: the attention's output shows
    pooled.load_state_dict(full.state_dict())
    x = torch.randn(2, 8, 1, 1).expand(2, 8, 32, 32).contiguous()
    assert torch.allclose(pooled(x), full(x), atol=1e-3)  # float rounding of the 9-value means
    y = torch.randn(2, 8, 32, 32)  # and on a real map they differ: the pooled one is used
    assert not torch.allclose(pooled(y), full(y), atol=0.1)
    assert pooled(y).shape == y.shape
