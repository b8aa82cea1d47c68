"""The from-scratch track: each method's layer count against its paper's formula, the ScratchToy at the
plain toy's total (±5 %), its forward, taps and backward on the toy's protocol, and bad arguments."""

import pytest
import torch

from gattanet.adapters.budget import BUDGET_TOL
from gattanet.adapters.scratch import (SCRATCH_DEVIATIONS, SCRATCH, RoutedConv2d, ScratchToy, build_scratch,
                                       count_params, plain_params, scratch_widths, toy_total)
from gattanet.data.specs import get_spec
from gattanet.models.attention import GlobalAttention
from gattanet.models.gattanet import GAttANet
from gattanet.models.toy import ToyCNN

pytestmark = pytest.mark.usefixtures("one_thread")

METHODS = list(SCRATCH)
DATASETS = ["fashion-mnist", "cifar10"]
PAIRS = [(4, 24), (24, 50), (64, 128), (32, 640)]  # 640: SK's d = C/r = 40 > L; 64 → 128: splat's a = 64 > 32


def scratch_formula(method: str, widths, hidden: int, in_channels: int, num_classes: int, input_size: int = 32) -> int:
    """The ScratchToy's count by the papers' formulas: its conv layers + fc1 + fc2."""
    side = input_size >> len(widths)
    convs = sum(plain_params(a, b) if kind == "plain" else SCRATCH[kind].formula(a, b)
                for kind, a, b in SCRATCH[method].layers(in_channels, widths))
    return convs + (widths[-1] * side * side + 1) * hidden + (hidden + 1) * num_classes

# (C_in, C_out) = (32, 64), counted by hand from each paper's layer:
HAND = {
    # 2 × (9·32·64 + BN 2·64) + fuse 64·32 + BN 2·32 + select 32·2·64, d = max(64/16, 32) = 32
    "sk": 2 * (18432 + 128) + 2048 + 64 + 4096,
    # conv 2 groups × (64·2 outs × 16 ins × 9) + BN 2·128 + fc1 64·32 + 32 + BN 2·32 + fc2 32·128 + 128, a = 32
    "splat": 18432 + 256 + 2080 + 64 + 4224,
    # 8 × (9·32·64 + 64) + routing 32·8 + 8
    "condconv": 8 * 18496 + 264,
    # 4 × (9·32·64 + 64) + FC 32 → 8 (+ b) + FC 8 → 4 (+ b)
    "dynconv": 4 * 18496 + 264 + 36,
}


def meta_count(make) -> int:
    with torch.device("meta"):
        return count_params(make())


@pytest.mark.parametrize("method", METHODS)
def test_layer_count_is_the_papers_formula(method):
    s = SCRATCH[method]
    assert s.formula(32, 64) == HAND[method]
    for c_in, c_out in PAIRS:
        assert meta_count(lambda: s.layer(c_in, c_out)) == s.formula(c_in, c_out), (c_in, c_out)


@pytest.mark.parametrize("method", METHODS)
def test_layer_keeps_the_map_and_widens_it(method):
    x = torch.randn(2, 4, 8, 8)
    assert SCRATCH[method].layer(4, 6)(x).shape == (2, 6, 8, 8)


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("method", METHODS)
def test_at_the_toys_total(method, dataset):
    spec = get_spec(dataset)
    total = toy_total(spec.channels, spec.num_classes, spec.size)
    assert total == meta_count(lambda: ToyCNN(spec.channels, spec.num_classes, input_size=spec.size))
    widths, hidden, params = scratch_widths(method, total, spec.channels, spec.num_classes, spec.size)
    assert abs(params - total) <= BUDGET_TOL * total
    scale = hidden / 256  # one factor on the toy's widths, each rounded to the method's multiple
    k = SCRATCH[method].multiple
    assert all(abs(w - base * scale) <= k / 2 and w % k == 0 for w, base in zip(widths, (32, 64, 128)))
    assert scale != 1  # every method changes the count at the toy's widths
    net = build_scratch(method, spec.channels, spec.num_classes, spec.size)
    assert (net.widths, net.hidden) == (widths, hidden)
    assert count_params(net) == params == scratch_formula(method, widths, hidden, spec.channels,
                                                          spec.num_classes, spec.size)


def test_condconv_is_narrowest_and_the_search_is_the_closest():
    widths = {m: scratch_widths(m, toy_total(1, 10), 1, 10)[0] for m in METHODS}
    assert min(widths, key=lambda m: widths[m][-1]) == "condconv"  # K = 8 kernels per layer: the most
    total = toy_total(1, 10)
    _, hidden, params = scratch_widths("dynconv", total, 1, 10)
    for n in (hidden - 1, hidden + 1):  # the neighbours on the 1/256 grid are no closer
        w = tuple(round(b * n / 256) for b in (32, 64, 128))
        assert abs(scratch_formula("dynconv", w, n, 1, 10) - total) >= abs(params - total)


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {m: build_scratch(m, 3, 10) for m in METHODS}


@pytest.mark.parametrize("method", METHODS)
def test_forward_and_taps_are_the_toys(nets, method):
    net, toy = nets[method], ToyCNN(3, 10)
    assert net.arch == f"scratch-{method}" and (net.in_channels, net.num_classes, net.input_size) == (3, 10, 32)
    taps, toy_taps = net.taps(), toy.taps()
    assert [(t.name, t.kind) for t in taps] == [(t.name, t.kind) for t in toy_taps]
    assert [t.shape for t in taps] == [(net.widths[0], 32, 32), (net.widths[1], 16, 16), (net.widths[2], 8, 8),
                                       (net.hidden,), (10,)]
    kinds = [type(c).__name__ for c in net.convs]
    assert kinds[0] == ("Conv2d" if method == "splat" else kinds[1]) and kinds[1] != "Conv2d"
    net.eval()
    x = torch.randn(3, 3, 32, 32)
    logits, acts = net.run(x)
    assert logits.shape == (3, 10) and [a.shape[1:] for a in acts] == [t.shape for t in taps]
    assert torch.allclose(net.resume(1, acts[1]), logits, atol=1e-5)
    assert torch.allclose(net(x[:1]), logits[:1], atol=1e-5)  # per image: the routing reads only its own image


@pytest.mark.parametrize("method", METHODS)
def test_backward_reaches_every_parameter(nets, method):
    net = nets[method]
    net.train()
    torch.manual_seed(1)
    loss = torch.nn.functional.cross_entropy(net(torch.randn(4, 3, 32, 32)), torch.arange(4))
    net.zero_grad()
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_gattanet_sits_on_a_scratch_toy():
    net = ScratchToy("sk", 3, 10, (8, 8, 8), 16)
    model = GAttANet(net, GlobalAttention(net.taps(), 8))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_routing_weights():
    torch.manual_seed(0)
    x = torch.randn(5, 6, 8, 8)
    cond, dyn = SCRATCH["condconv"].layer(6, 4), SCRATCH["dynconv"].layer(6, 4)
    a = cond.router(x.mean((2, 3)))
    assert a.shape == (5, 8) and ((a > 0) & (a < 1)).all() and not torch.allclose(a.sum(1), torch.ones(5))
    pi = dyn.router(x.mean((2, 3)))
    assert pi.shape == (5, 4) and torch.allclose(pi.sum(1), torch.ones(5))
    dyn.router.temperature = 30.0
    flat = dyn.router(x.mean((2, 3)))
    assert (flat.max(1).values - flat.min(1).values < pi.max(1).values - pi.min(1).values).all()
    # one image's kernel is the π-weighted sum of the K kernels
    conv = dyn.conv
    w = (flat[:1] @ conv.weight).view(conv.weight_shape)
    b = flat[:1] @ conv.bias
    assert torch.allclose(dyn(x[:1]), torch.nn.functional.conv2d(x[:1], w, b[0], padding=1), atol=1e-5)
    assert isinstance(dyn, RoutedConv2d)


def test_bad_arguments():
    for call in (lambda: ScratchToy("ram"), lambda: scratch_widths("cbam", 1000, 1, 10),
                 lambda: build_scratch("SK", 1, 10)):
        with pytest.raises(ValueError, match="allowed: sk, splat, condconv, dynconv"):
            call()
    with pytest.raises(ValueError, match="multiple of radix"):
        ScratchToy("splat", 1, 10, (5, 8, 8), 16)
    with pytest.raises(ValueError, match="target parameter count"):
        scratch_widths("sk", 0, 1, 10)
    assert set(SCRATCH_DEVIATIONS) == {"*", *METHODS}
