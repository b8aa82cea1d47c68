"""Shared evaluation (gattanet.engine.fast_eval): one first pass for the baseline and several GAttANets on one
backbone gives the same logits as each model's own forward, lesion patterns included, in fp32 and under
bf16 autocast; settings where the shortcut would be wrong are refused."""

import copy

import pytest
import torch

from gattanet.models.attention import GlobalAttention
from gattanet.models.registry import build_backbone
from gattanet.data.datasets import TensorData
from gattanet.engine.evaluate import correct, correct_batched
from gattanet.engine.fast_eval import shared_logits, shared_states
from gattanet.models.lesion import ablation_patterns
from gattanet.data.loader import Finish, TensorLoader
from gattanet.models.gattanet import GAttANet


pytestmark = pytest.mark.usefixtures("one_thread")


def randomise(model: GAttANet, seed: int) -> GAttANet:
    """Random α (far from the α = 0 start, where GAttANet is the baseline), random projections and, with
    kq_norm, random BatchNorm statistics and affine terms, so a wrong modulation shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.attention.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        for name, b in model.attention.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model.eval()


def toy_backbone():
    return build_backbone("toy", 10, 1, widths=(8, 16, 16), hidden=32, input_size=16)


def family(iterations: int = 1):
    """Three GAttANets on one toy backbone: d = 4, d = 8 with kq/score norms, d = 6 with a lesion by default."""
    torch.manual_seed(0)
    backbone = toy_backbone()
    taps = backbone.taps()
    models = {
        "a": GAttANet(backbone, GlobalAttention(taps, 4), iterations=iterations),
        "b": GAttANet(backbone, GlobalAttention(taps, 8, kq_norm=True, score_norm=True), iterations=iterations),
        "c": GAttANet(backbone, GlobalAttention(taps, 6), lesion="cc.dd", iterations=iterations),
    }
    return backbone, {name: randomise(m, seed) for seed, (name, m) in enumerate(models.items(), start=1)}


def images(n: int = 8, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


PATTERNS = [p["pattern"] for p in ablation_patterns(toy_backbone().taps())]  # none, full, each ablated, each alone


def separate(models: dict[str, GAttANet], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What shared_logits should give, from each model's own passes."""
    with torch.no_grad():
        out = {"baseline": next(iter(models.values())).baseline(x)}
        for name, m in models.items():
            out[name] = m(x)
            out |= {f"{name}:{p}": m(x, lesion=p) for p in PATTERNS}
    return out


def test_the_models_differ_from_the_baseline_and_between_patterns():
    """Guard: the comparisons below would pass vacuously if attention changed nothing (every difference
    is at least 100 times the 1e-5 they are checked to)."""
    _, models = family()
    ref = separate(models, images())
    for name in models:
        assert (ref[name] - ref["baseline"]).abs().max() > 1e-3, name
        full = ref[f"{name}:{PATTERNS[1]}"]
        assert all((ref[f"{name}:{p}"] - full).abs().max() > 1e-3 for p in PATTERNS[2:]), name
    assert (ref["a"] - ref["b"]).abs().max() > 1e-3
    assert not torch.equal(ref["c"], ref[f"c:{PATTERNS[1]}"])  # c's own default is not the full pattern


def test_shared_logits_equal_separate_passes_in_fp32():
    _, models = family()
    x = images()
    got, want = shared_logits(models, x, PATTERNS), separate(models, x)
    assert set(got) == set(want) == {"baseline", *models, *(f"{n}:{p}" for n in models for p in PATTERNS)}
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5, msg=key)
    assert set(shared_logits(models, x)) == {"baseline", *models}  # no lesions asked: no lesion keys


def test_shared_logits_equal_separate_passes_under_bf16_autocast_exactly():
    _, models = family()
    x = images()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = shared_logits(models, x, PATTERNS), separate(models, x)
    with torch.no_grad():
        fp32 = models["a"](x)
    assert not torch.equal(want["a"].float(), fp32)  # autocast did compute in bf16
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        assert torch.equal(got[key], want[key]), key


@pytest.mark.parametrize("dim", [16, 64])
def test_shared_logits_equal_the_equations_plain_path_at_the_default_dimensions(dim):
    """The default profile's shapes (toy, 1×32×32) at d = 16 and 64: the shared evaluation (folded eval path)
    against each model's forward with `fast` off (Eqs. 1-4 as written), both against that path in float64.
    fp32 within 1e-5 of the logits' norm; bf16 no further off than the plain path's own bf16 error, times 4."""
    torch.manual_seed(0)
    backbone = build_backbone("toy", 10, 1)
    model = randomise(GAttANet(backbone, GlobalAttention(backbone.taps(), dim)), dim)
    with torch.no_grad():
        model.attention.alpha.copy_(torch.linspace(-3.0, 3.0, len(model.taps)))
    x = torch.rand(16, 1, 32, 32, generator=torch.Generator().manual_seed(1))

    def plain(m, x):
        m.attention.fast = False
        with torch.no_grad():
            out = m(x)
        m.attention.fast = True
        return out.double()

    exact = plain(copy.deepcopy(model).double(), x.double())
    assert (exact - model.baseline(x).double()).norm() > 0.1 * exact.norm()  # attention changes the logits
    err = lambda a: ((a.double() - exact).norm() / exact.norm()).item()
    assert err(shared_logits({"m": model}, x)["m"]) <= 1e-5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast, own = err(shared_logits({"m": model}, x)["m"]), err(plain(model, x))
    assert 0 < own < 0.1 and fast <= 4 * own, (fast, own)


def test_shared_logits_equal_separate_passes_on_a_resnet18():
    """Residual blocks with in-place adds and ReLUs, BatchNorm, 6 taps: a second pass that resumes from the
    first pass's activation must not alter it for the next model or pattern."""
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", 10, 1, input_size=16)
    taps = backbone.taps()
    models = {name: randomise(GAttANet(backbone, GlobalAttention(taps, 4, kq_norm=True, score_norm=True)), seed)
              for seed, name in enumerate("ab", start=1)}
    patterns = [p["pattern"] for p in ablation_patterns(taps)]
    x = images(4)
    got = shared_logits(models, x, patterns)
    with torch.no_grad():
        want = {"baseline": backbone(x)} | {f"{n}:{p}": m(x, lesion=p) for n, m in models.items() for p in patterns}
        want |= {n: m(x) for n, m in models.items()}
    assert (want["a"] - want["baseline"]).abs().max() > 1e-3 and (want["a"] - want["b"]).abs().max() > 1e-3
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5, msg=key)


def test_shared_states_give_each_models_query_and_scores():
    backbone, models = family()
    x = images()
    logits, acts, states = shared_states(models, x)
    with torch.no_grad():
        base_logits, base_acts = backbone.run(x)
    assert torch.equal(logits, base_logits) and all(torch.equal(a, b) for a, b in zip(acts, base_acts))
    for name, m in models.items():
        with torch.no_grad():
            _, own = m(x, return_state=True)
        torch.testing.assert_close(states[name].query, own.query, rtol=1e-5, atol=1e-5)
        for s, t in zip(states[name].scores, own.scores):
            torch.testing.assert_close(s, t, rtol=1e-5, atol=1e-5)


def test_correct_batched_over_shared_logits_pairs_up_with_separate_forwards():
    """What the stages do: one shared pass per batch, per-image correctness for every model."""
    _, models = family()
    g = torch.Generator().manual_seed(5)
    data = TensorData(torch.randint(0, 256, (24, 1, 16, 16), dtype=torch.uint8, generator=g),
                      torch.randint(0, 10, (24,), generator=g), (0.5,), (0.25,), tuple("0123456789"))
    loader = TensorLoader(data, 10, Finish(data.mean, data.std, sigma=0.1, noise_seed=2))
    fast = correct_batched(lambda x: shared_logits(models, x, PATTERNS[1:3]), loader, topk=(1, 3))
    slow = correct({"baseline": models["a"].baseline, **models,
                    **{f"{n}:{p}": (lambda x, m=m, p=p: m(x, lesion=p)) for n, m in models.items()
                       for p in PATTERNS[1:3]}}, loader, topk=(1, 3))
    assert set(fast) == set(slow)
    for key in slow:
        assert torch.equal(fast[key], slow[key]), key


def test_refuses_models_on_different_backbone_objects():
    backbone, models = family()
    other = copy.deepcopy(models["b"])  # equal weights, but its own backbone object
    assert other.backbone is not backbone
    with pytest.raises(ValueError, match="'other' has its own backbone"):
        shared_logits({"a": models["a"], "other": other}, images())
    with pytest.raises(ValueError, match="own backbone"):
        shared_states({"a": models["a"], "other": other}, images())


def test_refuses_more_than_one_attention_iteration():
    _, models = family(iterations=2)
    with pytest.raises(ValueError, match="'a' runs 2 attention iterations"):
        shared_logits(models, images())


def test_refuses_models_in_training_mode_and_no_models():
    _, models = family()
    models["b"].train()
    with pytest.raises(ValueError, match="'b' is in training mode"):
        shared_logits(models, images())
    with pytest.raises(ValueError, match="'b' is in training mode"):
        shared_states(models, images())
    with pytest.raises(ValueError, match="no models"):
        shared_logits({}, images())
