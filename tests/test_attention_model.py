"""Attention (Eqs. 1-4), lesions, and the two-pass GAttANet (Eq. 5) with its frozen backbone."""

import pytest
import torch

import contextlib

import gattanet.models.attention as attention_module
from gattanet.models.attention import GlobalAttention, PointwiseConv, UnitProjection, dropout_mask, fast_dropout
from gattanet.models.registry import build_backbone
from gattanet.models.lesion import ablation_patterns, full_pattern, parse_lesion
from gattanet.models.gattanet import GAttANet, modulate
from gattanet.models.taps import Tap
from gattanet.models.toy import ToyCNN

TINY = [Tap("conv", "conv", (2, 2, 2)), Tap("dense", "dense", (3,))]


def toy_model(dim=4, dropout=0.0, seed=0, **kw):
    torch.manual_seed(seed)
    backbone = ToyCNN(3, 10)
    return GAttANet(backbone, GlobalAttention(backbone.taps(), dim, dropout=dropout), **kw)


def images(n=2, seed=1):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# --- attention -------------------------------------------------------------------------------

def test_attention_parameter_count_matches_the_paper():
    taps = ToyCNN(3, 10).taps()
    assert GlobalAttention(taps, 16).count_parameters() == 15_781
    # kq_norm adds a BatchNorm (weight + bias, d each) on keys and on queries of all 5 taps
    assert GlobalAttention(taps, 16, kq_norm=True).count_parameters() == 15_781 + 5 * 2 * 2 * 16
    assert GlobalAttention(taps, 16, score_norm=True).count_parameters() == 15_781
    assert GlobalAttention(taps, 1).count_parameters() > 0
    with pytest.raises(ValueError, match=">= 1"):
        GlobalAttention(taps, 0)


def test_alpha_starts_at_zero():
    att = GlobalAttention(TINY, 2)
    assert torch.equal(att.alpha.data, torch.zeros(2)) and att.alpha.requires_grad


def set_tiny_weights(att):
    """Queries: identity 1x1 conv (no bias) and W_q rows e1, e2, e1+e2; keys: identity conv with bias (1, 0).
    A tap's projection holds keys in its first d outputs and queries in the last d."""
    conv, dense = att.layers
    with torch.no_grad():
        conv.proj.weight.copy_(torch.eye(2).repeat(2, 1).view(4, 2, 1, 1))
        conv.proj.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        dense.proj.weight.copy_(torch.tensor([[1.0, 2.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0], [-1.0, 0.0, 1.0, 1.0]]))


def test_global_query_and_scores_by_hand():
    att = GlobalAttention(TINY, 2).eval()
    set_tiny_weights(att)
    conv_x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 4.0]]]])  # (1, C=2, 2, 2)
    dense_x = torch.tensor([[2.0, 4.0, 6.0]])
    s = att([conv_x, dense_x])
    # Eq. 3: conv layer mean query = channel means (2.5, 1); dense: q_i = x_i W_q[i] = (2,0), (0,4), (6,6),
    # mean (8/3, 10/3); global query = mean of the two layer means
    assert torch.allclose(s.query, torch.tensor([[(5 / 2 + 8 / 3) / 2, (1 + 10 / 3) / 2]]))
    q1, q2 = 31 / 12, 13 / 6
    # Eq. 4: conv key at (y, x) = X[:, y, x] + (1, 0)
    expected_conv = torch.tensor([[[q1 * 2 + q2 * 0, q1 * 3 + q2 * 0], [q1 * 4 + q2 * 0, q1 * 5 + q2 * 4]]])
    assert torch.allclose(s.scores[0], expected_conv)
    # dense keys k_i = x_i W_k[i] = (2, 4), (0, 4), (-6, 0)
    expected_dense = torch.tensor([[q1 * 2 + q2 * 4, q2 * 4, -6 * q1]])
    assert torch.allclose(s.scores[1], expected_dense)


def test_state_shapes_and_scores_are_dot_products():
    torch.manual_seed(0)
    att = GlobalAttention(TINY, 5).eval()
    s = att([torch.randn(3, 2, 2, 2), torch.randn(3, 3)])
    assert [tuple(k.shape) for k in s.keys] == [(3, 5, 2, 2), (3, 3, 5)]
    assert [tuple(q.shape) for q in s.queries] == [(3, 5, 2, 2), (3, 3, 5)]
    assert s.query.shape == (3, 5) and [tuple(a.shape) for a in s.scores] == [(3, 2, 2), (3, 3)]
    for b in range(3):
        for y in range(2):
            for x in range(2):
                assert torch.isclose(s.scores[0][b, y, x], sum(s.query[b, j] * s.keys[0][b, j, y, x] for j in range(5)))
        for i in range(3):
            assert torch.isclose(s.scores[1][b, i], sum(s.query[b, j] * s.keys[1][b, i, j] for j in range(5)))


def test_norm_options():
    torch.manual_seed(0)
    acts = [torch.randn(4, 2, 2, 2), torch.randn(4, 3)]
    att = GlobalAttention(TINY, 3, score_norm=True).eval()
    normed = att(acts).scores
    att.score_norm = False
    # each layer's map is standardised over its own positions (H×W) or units (N), per image
    for a, raw in zip(normed, att(acts).scores):
        flat = raw.flatten(1)
        mean, var = flat.mean(1, keepdim=True), flat.var(1, unbiased=False, keepdim=True)
        assert torch.allclose(a.flatten(1), (flat - mean) / torch.sqrt(var + 1e-5), atol=1e-5)
    att = GlobalAttention(TINY, 3, kq_norm=True, dropout=0.0).train()
    s = att(acts)
    # in training, BatchNorm gives keys zero mean per feature over batch × positions (units)
    assert torch.allclose(s.keys[0].mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(s.keys[1].mean(dim=(0, 1)), torch.zeros(3), atol=1e-5)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    att = GlobalAttention(TINY, 8, dropout=0.5)
    acts = [torch.randn(2, 2, 2, 2), torch.randn(2, 3)]
    att.eval()
    assert torch.equal(att(acts).query, att(acts).query)
    att.train()
    assert not torch.equal(att(acts).keys[0], att(acts).keys[0])


def random_norm_stats(att):
    """Give every BatchNorm of keys/queries non-trivial eval statistics and affine terms."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in att.layers:
            for t in (layer.norm.weight, layer.norm.bias, layer.norm.running_mean, layer.norm.running_var):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)


@pytest.mark.parametrize("kq_norm", [False, True])
def test_eval_shortcut_equals_the_per_position_keys_and_queries(kq_norm):
    # eval computes query and scores from the activations directly; they must be Eq. 3 and 4
    # applied to the materialised keys and queries
    torch.manual_seed(0)
    att = GlobalAttention(TINY, 3, kq_norm=kq_norm).eval()
    if kq_norm:
        random_norm_stats(att)
    acts = [torch.randn(4, 2, 2, 2), torch.randn(4, 3)]
    s = att(acts)
    layer_means = [s.queries[0].mean(dim=(2, 3)), s.queries[1].mean(dim=1)]
    assert torch.allclose(s.query, torch.stack(layer_means).mean(0), atol=1e-6)
    assert torch.allclose(s.scores[0], torch.einsum("bd,bdhw->bhw", s.query, s.keys[0]), atol=1e-5)
    assert torch.allclose(s.scores[1], torch.einsum("bd,bnd->bn", s.query, s.keys[1]), atol=1e-5)
    lean = att(acts, with_kq=False)
    assert lean.keys is None and lean.queries is None
    assert torch.equal(lean.query, s.query) and all(torch.equal(a, b) for a, b in zip(lean.scores, s.scores))


def test_train_without_dropout_equals_eval():
    torch.manual_seed(0)
    att = GlobalAttention(ToyCNN(3, 10).taps(), 4, dropout=0.0)
    _, acts = ToyCNN(3, 10).eval().run(images())
    train, evald = att.train()(acts, with_kq=False), att.eval()(acts)
    assert train.keys is None and att.train()(acts).keys is not None  # materialised only when asked for
    assert torch.allclose(train.query, evald.query, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(train.scores, evald.scores))


# The plain forward (Eqs. 1-4 as written, `fast` off) against the fast paths that produce every reported
# number. They differ by float32 rounding only: the measured worst case is 1.1e-5 of the largest value
# (ResNet18, kq_norm, training-mode BatchNorm); the tolerance is 1e-4 of the largest value of each tensor.
REL_TOL = 1e-4


def assert_agree(fast, plain):
    scale = plain.abs().max().item()
    assert fast.shape == plain.shape
    assert (fast - plain).abs().max().item() <= REL_TOL * scale, (fast - plain).abs().max().item() / scale


def activations(arch):
    torch.manual_seed(0)
    backbone = build_backbone(arch, 10, 3, input_size=32).eval()
    with torch.no_grad():
        return backbone.taps(), backbone.run(images(4))[1]


@pytest.fixture(scope="module", params=["toy", "resnet18"])
def backbone_acts(request):
    return activations(request.param)


@pytest.mark.parametrize("kq_norm,score_norm", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_plain_forward_agrees_with_the_fast_paths(backbone_acts, kq_norm, score_norm, mode):
    taps, acts = backbone_acts
    torch.manual_seed(1)
    att = GlobalAttention(taps, 8, dropout=0.0, kq_norm=kq_norm, score_norm=score_norm).train(mode == "train")
    if kq_norm:
        random_norm_stats(att)
    with torch.no_grad():
        att.fast = False
        plain = att(acts)
        att.fast = True
        fast = {"batched": att.forward_batched(acts)}
        if mode == "eval":
            fast["folded"] = att.forward_folded(acts)
            assert torch.equal(att(acts, with_kq=False).query, fast["folded"].query)  # eval's default path
        else:
            assert torch.equal(att(acts).query, fast["batched"].query)  # training's default path
    for name, s in fast.items():
        assert_agree(s.query, plain.query)
        for a, b in zip(s.scores, plain.scores):
            assert_agree(a, b)
        for a, b in zip(s.keys + s.queries, plain.keys + plain.queries):
            assert_agree(a, b)


# Training with dropout: the factored path (masked sums as matmuls, no keys or queries) against the plain
# forward, given the same masks: the fast path's masks are recorded, then replayed to the plain path through
# F.dropout (keys and queries of a tap side by side, as the plain path stacks them). Each path's error is
# taken against the plain path in float64: the fast one may exceed the plain one's own rounding error in the
# same precision by a small factor only (fp32: both are ~1e-6 of the norm; bf16: both ~1e-2).
ROUNDING_FACTOR = 4


def training_outputs(model, x, y, masks, fast, dtype):
    """Logits and the gradients of every attention parameter (W_k, W_q, biases, α) of one training step."""
    model.zero_grad()
    model.attention.fast = fast
    replay = iter(masks)

    def replayed_mask(shape, p, dtype, device):
        mask = next(replay)
        assert mask.shape == tuple(shape)
        return mask.to(dtype)

    def replayed_dropout(t, p, training=True, inplace=False):
        if not training or p == 0:  # the frozen backbone's dropout, off
            return t
        mask = torch.cat([next(replay), next(replay)], dim=1 if t.dim() == 4 else 2).view(t.shape)
        return t * mask.to(t.dtype) / (1 - p)

    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == torch.bfloat16 else contextlib.nullcontext()
    with pytest.MonkeyPatch.context() as mp, autocast:
        mp.setattr(attention_module, "dropout_mask", replayed_mask)
        mp.setattr(torch.nn.functional, "dropout", replayed_dropout)
        logits = model(x.to(dtype if dtype == torch.float64 else torch.float32))
    torch.nn.functional.cross_entropy(logits.double(), y).backward()
    assert next(replay, None) is None  # every mask used
    return [logits.detach().double()] + [p.grad.double() for p in model.attention.parameters()]


def relative_errors(outputs, reference):
    return [((a - b).norm() / b.norm()).item() for a, b in zip(outputs, reference)]


@pytest.mark.parametrize("dim", [16, 64])
def test_training_fast_path_agrees_with_the_equations_forward_and_gradients(dim):
    torch.manual_seed(0)
    backbone = build_backbone("toy", 10, 1)
    model = GAttANet(backbone, GlobalAttention(backbone.taps(), dim, dropout=0.25)).train()
    with torch.no_grad():
        model.attention.alpha.copy_(torch.linspace(-3.0, 3.0, len(model.taps)))  # far from the baseline
    x = torch.rand(16, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 10
    masks, draw = [], attention_module.dropout_mask
    with pytest.MonkeyPatch.context() as mp, torch.no_grad():
        mp.setattr(attention_module, "dropout_mask", lambda *a: masks.append(draw(*a)) or masks[-1])
        model(x)
    assert len(masks) == 2 * len(model.taps) and all(set(m.unique().tolist()) == {0.0, 1.0} for m in masks)
    exact = training_outputs(model.double(), x, y, masks, False, torch.float64)
    model.float()
    for dtype in (torch.float32, torch.bfloat16):
        plain = relative_errors(training_outputs(model, x, y, masks, False, dtype), exact)
        fast = relative_errors(training_outputs(model, x, y, masks, True, dtype), exact)
        # guard: the precision is what it says. fp32 against fp64 reaches 5e-3 here at d = 16 on an AVX2-only CPU
        # (oneDNN's fp32 conv gradients; 2e-5 on AVX-512 ones), bf16 0.13 and more: 1e-2 tells them apart on both
        assert max(plain) < (1e-2 if dtype == torch.float32 else 0.5)
        for name, f, p in zip(["logits"] + [n for n, _ in model.attention.named_parameters()], fast, plain):
            assert f <= ROUNDING_FACTOR * p + (1e-7 if dtype == torch.float32 else 1e-3), (dtype, name, f, p)


@pytest.mark.parametrize("arch", ["toy", "resnet18"])
def test_plain_attention_gives_the_models_logits(arch):
    torch.manual_seed(0)
    backbone = build_backbone(arch, 10, 3, input_size=32)
    norms = arch != "toy"
    model = GAttANet(backbone, GlobalAttention(backbone.taps(), 8, kq_norm=norms, score_norm=norms))
    if norms:
        random_norm_stats(model.attention)
    with torch.no_grad():
        model.attention.alpha.copy_(torch.linspace(-10.0, 10.0, len(model.taps)))  # scores are small at init
        x = images(4)
        fast = model(x)
        model.attention.fast = False
        plain = model(x)
    assert (fast - model.baseline(x)).abs().max() > 100 * REL_TOL * plain.abs().max()  # α changes the logits
    assert_agree(fast, plain)


def test_folded_path_refuses_training_mode():
    att = GlobalAttention(TINY, 2).train()
    with pytest.raises(RuntimeError, match="eval mode only"):
        att.forward_folded([torch.randn(1, 2, 2, 2), torch.randn(1, 3)])


def test_keys_and_queries_share_one_projection_initialised_per_half():
    conv, dense = GlobalAttention([Tap("c", "conv", (50, 2, 2)), Tap("d", "dense", (40,))], 8).layers
    assert conv.proj.weight.shape == (16, 50, 1, 1) and conv.proj.bias.shape == (16,)
    bound = 1 / 50 ** 0.5  # Conv2d's default init depends only on the input channels
    assert conv.proj.weight.abs().max() <= bound and conv.proj.bias.abs().max() <= bound
    # each (N, d) half gets its own glorot bound sqrt(6 / (N + d)), not that of an (N, 2d) weight
    assert dense.proj.weight.shape == (40, 16)
    for half in dense.proj.weight.chunk(2, dim=1):
        assert (6 / 48) ** 0.5 * 0.8 < half.abs().max() <= (6 / 48) ** 0.5


def test_pointwise_conv_is_a_1x1_convolution():
    torch.manual_seed(0)
    conv, x = PointwiseConv(5, 3), torch.randn(2, 5, 4, 3)
    assert torch.allclose(conv(x), torch.nn.functional.conv2d(x, conv.weight, conv.bias), atol=1e-6)
    u, x = UnitProjection(4, 2), torch.randn(3, 4)
    assert torch.equal(u(x)[:, 1, :], x[:, 1:2] * u.weight[1])


@pytest.mark.parametrize("p", [0.25, 0.5, 0.1])
def test_dropout_rate_scale_and_seed(p):
    x = torch.ones(7, 11, 13, 17)  # an element count that is not a multiple of 4
    torch.manual_seed(5)
    y = fast_dropout(x, p)
    assert y.shape == x.shape
    kept = y != 0
    assert torch.allclose(y[kept], torch.tensor(1 / (1 - p)))
    n = x.numel()
    assert abs((~kept).float().mean().item() - p) < 4 * (p * (1 - p) / n) ** 0.5
    torch.manual_seed(5)
    assert torch.equal(fast_dropout(x, p), y)
    assert not torch.equal(fast_dropout(x, p), y)
    half = fast_dropout(x.bfloat16(), p)  # the scale is applied in float32, then rounded once
    assert half.dtype == torch.bfloat16
    assert torch.equal(half[half != 0].unique(), torch.tensor([1 / (1 - p)]).bfloat16())


@pytest.mark.parametrize("p", [0.25, 0.75, 0.1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_mask_is_independent_per_element_at_rate_p(p, dtype):
    torch.manual_seed(7)
    m = dropout_mask((3, 101, 333), p, dtype, "cpu")  # an element count that is not a multiple of 64
    assert m.shape == (3, 101, 333) and m.dtype == dtype and set(m.unique().tolist()) == {0.0, 1.0}
    keep, n = m.flatten().float(), m.numel()
    assert abs(1 - keep.mean().item() - p) < 4 * (p * (1 - p) / n) ** 0.5
    for lag in (1, 8, 64):  # neighbours in a byte, across bytes, across the 64-bit words of a bit plane
        both = (keep[:-lag] * keep[lag:]).mean().item()
        assert abs(both - (1 - p) ** 2) < 4 * ((1 - p) ** 2 / n) ** 0.5, lag
    torch.manual_seed(7)
    assert torch.equal(dropout_mask((3, 101, 333), p, dtype, "cpu"), m)
    with pytest.raises(ValueError, match="0 < p < 1"):
        dropout_mask((2,), 0.0, dtype, "cpu")


def test_keys_and_queries_are_dropped_independently():
    torch.manual_seed(0)
    att = GlobalAttention([Tap("c", "conv", (2, 16, 16))], 8, dropout=0.5).train()
    with torch.no_grad():  # keys and queries all 1 before dropout
        att.layers[0].proj.weight.zero_()
        att.layers[0].proj.bias.fill_(1.0)
    s = att([torch.randn(4, 2, 16, 16)])
    k, q = s.keys[0] != 0, s.queries[0] != 0
    assert abs(k.float().mean().item() - 0.5) < 0.03 and abs(q.float().mean().item() - 0.5) < 0.03
    assert abs((k == q).float().mean().item() - 0.5) < 0.03  # independent masks agree half the time


def test_dropout_trains_through_autograd():
    torch.manual_seed(0)
    model = toy_model(dropout=0.25)
    with torch.no_grad():
        model.attention.alpha.fill_(0.1)
    model.train()
    torch.nn.functional.cross_entropy(model(images()), torch.tensor([1, 2])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.attention_parameters())


# --- lesions ---------------------------------------------------------------------------------

def test_lesion_patterns():
    taps = ToyCNN(3, 10).taps()
    assert full_pattern(taps) == "cccdd"
    assert parse_lesion(None, taps) == [True] * 5
    assert parse_lesion("c.cd.", taps) == [True, False, True, True, False]
    with pytest.raises(ValueError, match=r"lesion 'ccxdd': position 2 \(conv3, a conv tap\) must be 'c' or '.'"):
        parse_lesion("ccxdd", taps)
    with pytest.raises(ValueError, match=r"position 3 \(fc1, a dense tap\) must be 'd'"):
        parse_lesion("cccc.", taps)
    with pytest.raises(ValueError, match="has 3 characters but there are 5 taps"):
        parse_lesion("ccc", taps)
    rows = ablation_patterns(taps)
    assert rows[:2] == [{"pattern": ".....", "kind": "none", "layer": None},
                        {"pattern": "cccdd", "kind": "full", "layer": None}]
    assert [r["pattern"] for r in rows if r["kind"] == "ablate"] == [".ccdd", "c.cdd", "cc.dd", "ccc.d", "cccd."]
    assert [(r["pattern"], r["layer"]) for r in rows if r["kind"] == "alone"] == [
        ("c....", "conv1"), (".c...", "conv2"), ("..c..", "conv3"), ("...d.", "fc1"), ("....d", "logits")]


# --- GAttANet --------------------------------------------------------------------------------

def test_zero_alpha_or_empty_lesion_gives_the_baseline_exactly():
    model = toy_model()
    x = images()
    base = model.baseline(x)
    assert torch.equal(model(x), base)
    with torch.no_grad():
        model.attention.alpha.fill_(0.5)
    assert torch.equal(model(x, lesion="....."), base)
    assert not torch.allclose(model(x), base)


def test_lesion_modulates_only_the_named_taps(monkeypatch):
    model = toy_model()
    with torch.no_grad():
        model.attention.alpha.copy_(torch.tensor([0.3, -0.2, 0.1, 0.05, 0.2]))
    x = images()
    calls = []
    run = model.backbone.run

    def spy(x, transforms=None):
        logits, acts = run(x, transforms)
        calls.append((transforms, acts))
        return logits, acts

    monkeypatch.setattr(model.backbone, "run", spy)
    logits, state = model(x, lesion="c....", return_state=True)
    (_, plain), (transforms, modulated) = calls
    assert transforms[0] is not None and transforms[1:] == [None] * 4
    # tap 0 is the plain activation scaled by 1 + α₀·a₀, broadcast over channels (Eq. 5)
    gain = 1 + 0.3 * state.scores[0].unsqueeze(1)
    assert torch.allclose(modulated[0], plain[0] * gain)
    # the other taps are what the backbone computes from the modulated conv1, untouched
    monkeypatch.undo()
    expected, acts = model.backbone.run(x, [lambda a: a * gain, None, None, None, None])
    assert torch.equal(logits, expected) and all(torch.equal(a, b) for a, b in zip(acts, modulated))
    assert not torch.allclose(logits, model(x))  # the full pattern differs


def test_modulate_is_eq5_and_in_place_only_where_it_gives_the_same_tensor():
    x, alpha = torch.rand(2, 3, 4, 4), torch.tensor(0.7)
    score = torch.randn(2, 4, 4)
    expected = x * (1 + alpha * score[:, None])  # X' = X ⊙ (1 + α · a), a broadcast over channels
    assert torch.equal(modulate(x, alpha, score), expected)
    dense, a = torch.rand(2, 5), torch.randn(2, 5)
    assert torch.equal(modulate(dense, alpha, a), dense * (1 + alpha * a))
    with torch.no_grad():
        y = x.clone()
        assert modulate(y, alpha, score, inplace=True) is y and torch.equal(y, expected)
        half = x.bfloat16()  # an fp32 gain on a bf16 activation: a new fp32 tensor, as without inplace
        out = modulate(half, alpha, score, inplace=True)
        assert out is not half and torch.equal(out, modulate(half, alpha, score))
    y = x.clone()
    assert modulate(y, alpha, score, inplace=True) is not y  # autograd on: never in place


def test_no_grad_inference_equals_the_autograd_path():
    # under no_grad the modulation scales activations in place; the numbers must not change
    for iterations in (1, 3):
        model = toy_model(iterations=iterations)
        with torch.no_grad():
            model.attention.alpha.copy_(torch.tensor([0.3, -0.2, 0.1, 0.05, 0.2]))
        x = images()
        logits, state = model(x, return_state=True)
        with torch.no_grad():
            fast, fast_state = model(x, return_state=True)
            assert torch.equal(model(x), fast)
        assert torch.equal(fast, logits) and torch.equal(fast_state.query, state.query)


def test_lesion_attribute_validates_and_per_call_override():
    model = toy_model(lesion="cc.dd")
    assert model.lesion == "cc.dd"
    model.lesion = None
    assert model.lesion == "cccdd"
    with pytest.raises(ValueError, match="position 2"):
        model.lesion = "ccxdd"
    with pytest.raises(ValueError, match="5 taps"):
        model(images(), lesion="cc")


def test_iterations():
    x = images()
    one, three = toy_model(), toy_model(iterations=3)
    assert torch.equal(three(x), one.baseline(x))  # α = 0
    for m in (one, three):
        with torch.no_grad():
            m.attention.alpha.fill_(0.4)
    assert not torch.allclose(three(x), one(x))
    with pytest.raises(ValueError, match="iterations"):
        toy_model(iterations=0)


def test_attention_must_fit_the_backbone():
    backbone = ToyCNN(3, 10)
    with pytest.raises(ValueError, match="attention was built for taps"):
        GAttANet(backbone, GlobalAttention(ToyCNN(3, 100).taps(), 4))


def test_training_step_moves_only_the_attention():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", 10, 3, input_size=32)
    model = GAttANet(backbone, GlobalAttention(backbone.taps(), 4, kq_norm=True, score_norm=True))
    with torch.no_grad():
        model.attention.alpha.fill_(0.1)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model.train()
    assert model.training and model.attention.training
    assert not any(m.training for m in backbone.modules())
    assert [id(p) for p in model.attention_parameters()] == [id(p) for p in model.attention.parameters()]
    opt = torch.optim.Adam(model.attention_parameters(), lr=1e-2)
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([1, 7])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert all(p.grad is not None for p in model.attention_parameters())
    assert model.attention.alpha.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in backbone.parameters())
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())  # weights and BN stats
    model.eval()
    assert not model.attention.training


def test_backbone_dropout_stays_off_in_training():
    model = toy_model(dropout=0.0)
    with torch.no_grad():
        model.attention.alpha.fill_(0.2)
    model.train()
    x = images()
    assert torch.equal(model(x), model(x))
    assert torch.equal(model.baseline(x), model.backbone.eval()(x))
