"""The attention variants beyond the paper (issue 22): iterations, heads, a top-down query, joint fine-tuning
and its control. Parameter counts by formula, the defaults as the paper's model, each variant's defining
property, the params validation, and (slow) each variant through the train-attn stage on the tiny profile."""

import copy
import json
from types import SimpleNamespace

import pytest
import torch
import yaml

import gattanet.models.attention as attention_module
from gattanet.engine.checkpoint import save_backbone
from gattanet.engine.train import Step, TrainConfig
from gattanet.models.attention import GlobalAttention
from gattanet.models.gattanet import GAttANet
from gattanet.models.registry import build_backbone
from gattanet.models.spec import AttentionSpec
from gattanet.models.toy import ToyCNN
from pipeline.config import ParamsError, validate
from pipeline import runs
from tests.helpers import with_param

pytestmark = pytest.mark.usefixtures("one_thread")

D = 16


def toy(dropout: float = 0.2, seed: int = 0) -> ToyCNN:
    torch.manual_seed(seed)
    return ToyCNN(1, 10, dropout=dropout)


def images(n: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


def spread_alpha(model: GAttANet) -> None:
    """α far from 0 so that the attention changes the logits."""
    with torch.no_grad():
        a = model.attention.alpha
        a.copy_(torch.linspace(-3.0, 3.0, a.numel()).view(a.shape))


# --- parameter counts ---------------------------------------------------------------------------

def paper_count(taps, d: int) -> tuple[int, int]:
    """(P, P_q) by Eqs. 1-2: a conv tap 2d(C + 1) (1x1 conv with bias), a dense one 2d·N (no bias), one α per
    tap; P_q is the query half of the projections."""
    half = sum(d * (t.channels + 1) if t.kind == "conv" else d * t.channels for t in taps)
    return 2 * half + len(taps), half


@pytest.mark.parametrize("d", [16, 64])
def test_each_variant_has_its_stated_parameter_count(d):
    taps = toy().taps()
    p, p_q = paper_count(taps, d)
    k, layers = taps[-1].channels, len(taps)
    assert AttentionSpec(d).trainable_params(taps) == p
    if d == 16:
        assert p == 15_781  # the paper's toy count
    for t in (2, 3):
        assert AttentionSpec(d, iterations=t).trainable_params(taps) == p  # the same weights at every pass
    for h in (2, 4):
        assert AttentionSpec(d, heads=h).trainable_params(taps) == p + (h - 1) * layers  # one α per tap and head
    assert AttentionSpec(d, query="top-down").trainable_params(taps) == p - p_q + k * d  # no W_q, E (K × d)
    assert AttentionSpec(d, query="top-down", heads=2).trainable_params(taps) == p - p_q + k * d + layers
    # fine-tuning: the attention's count is the paper's, and every backbone weight trains as well
    backbone = toy()
    model = AttentionSpec(d, finetune=True).build(backbone)
    assert sum(q.numel() for q in model.attention_parameters()) == p
    assert sum(q.numel() for q in model.backbone_parameters()) == sum(q.numel() for q in backbone.parameters())
    assert AttentionSpec(d).build(toy()).backbone_parameters() == []


def test_heads_must_divide_d():
    with pytest.raises(ValueError, match="divides dim = 16"):
        GlobalAttention(toy().taps(), 16, heads=3)
    with pytest.raises(ValueError, match="allowed: bottom-up, top-down"):
        GlobalAttention(toy().taps(), 16, query="sideways")


# --- the defaults are the paper's model -----------------------------------------------------------

@pytest.mark.parametrize("mode", ["eval", "train"])
def test_defaults_reproduce_single_pass_gattanet_exactly(mode):
    """T = 1, H = 1, bottom-up, frozen: the same weights, logits, gradients and random draws as the
    single-pass GAttANet built without any variant setting."""
    def built(explicit: bool) -> GAttANet:
        backbone = toy()
        torch.manual_seed(5)
        if explicit:
            return AttentionSpec(D, iterations=1, heads=1, query="bottom-up", finetune=False).build(backbone)
        return GAttANet(backbone, GlobalAttention(backbone.taps(), D))

    paper, spec = built(False), built(True)
    assert spec.attention.alpha.shape == (len(spec.taps),) and not hasattr(spec.attention, "class_queries")
    assert spec.shares_first_pass
    a, b = paper.state_dict(), spec.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    out = []
    for model in (paper, spec):
        spread_alpha(model)
        model.train(mode == "train")
        torch.manual_seed(9)
        logits = model(images())
        rng = torch.random.get_rng_state()
        grads = torch.autograd.grad(logits.square().sum(), model.attention_parameters()) if mode == "train" else ()
        out.append((logits, rng, grads))
    (la, ra, ga), (lb, rb, gb) = out
    assert torch.equal(la, lb) and torch.equal(ra, rb) and all(torch.equal(x, y) for x, y in zip(ga, gb))
    assert not torch.equal(la, paper.baseline(images()))  # the attention is in effect: the check can fail


def test_default_meta_and_label_are_the_papers():
    """A default run's checkpoint meta and cost-plan label carry no variant key: its files keep their bytes."""
    spec = AttentionSpec(D)
    assert set(spec.meta()) == {"attn_dim", "dropout", "kq_norm", "score_norm", "iterations", "lesion"}
    assert spec.label == "d=16,drop=0.25"
    variant = AttentionSpec(D, iterations=2, heads=2, query="top-down", finetune=True)
    assert AttentionSpec.from_meta(variant.meta()) == variant
    assert variant.label == "d=16,drop=0.25,iter=2,heads=2,top-down,finetune"


# --- iterations ------------------------------------------------------------------------------------

def test_each_iteration_uses_the_scores_of_the_pass_before():
    """T = 2 is pass 3 modulated by the scores of pass 2's modulated activations, not those of pass 1."""
    backbone = toy()
    model = AttentionSpec(D, iterations=2).build(backbone).eval()
    spread_alpha(model)
    x = images()
    with torch.no_grad():
        _, acts1 = backbone.run(x)  # pass 1
        s1 = model.attention(acts1).scores

        def transforms(scores):
            return [model._modulation(i, s, inplace=False) for i, s in enumerate(scores)]
        _, acts2 = backbone.run(x, transforms(s1))  # pass 2
        s2 = model.attention(acts2).scores
        want, _ = backbone.run(x, transforms(s2))  # pass 3
        stale, _ = backbone.run(x, transforms(s1))
        assert torch.equal(model(x), want)
        assert not torch.allclose(want, stale)


# --- heads -----------------------------------------------------------------------------------------

def test_heads_with_equal_alphas_are_the_single_head_model():
    """H heads of d/H features share W_k, W_q with the single-head run: with α_{l,h} = α_l for every head,
    Σ_h α_l q_h · k_h = α_l q · k, so the logits agree; different α per head change them."""
    single = AttentionSpec(D).build(toy())
    multi = AttentionSpec(D, heads=4).build(toy())
    multi.attention.load_state_dict(single.attention.state_dict() | {"alpha": multi.attention.alpha}, strict=True)
    spread_alpha(single)
    with torch.no_grad():
        multi.attention.alpha.copy_(single.attention.alpha[:, None].expand(-1, 4))
    x = images()
    for m in (single, multi):
        m.eval()
    with torch.no_grad():
        a, b = single(x), multi(x)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        multi.attention.alpha[:, 0] *= -1
        assert not torch.allclose(multi(x), a, rtol=1e-3, atol=1e-3)
    _, state = multi(x, return_state=True)
    conv, dense = state.scores[0], state.scores[-1]
    assert conv.shape == (8, 4, 32, 32) and dense.shape == (8, 4, 10)


def replay_training(model, x, masks, fast: bool) -> list[torch.Tensor]:
    """Logits and attention gradients of one training forward, the keys' and queries' dropout replaying
    `masks` (as the factored path drew them) on either path."""
    model.zero_grad()
    model.attention.fast = fast
    replay = iter(masks)
    per_tap = 2 if model.attention.query == "bottom-up" else 1

    def replayed_mask(shape, p, dtype, device):
        return next(replay).to(dtype)

    def replayed_dropout(t, p, training=True, inplace=False):
        if not training or p == 0:
            return t
        mask = torch.cat([next(replay) for _ in range(per_tap)], dim=1 if t.dim() == 4 else 2).view(t.shape)
        return t * mask / (1 - p)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(attention_module, "dropout_mask", replayed_mask)
        mp.setattr(torch.nn.functional, "dropout", replayed_dropout)
        logits = model(x)
    logits.square().sum().backward()
    assert next(replay, None) is None
    return [logits.detach()] + [p.grad.clone() for p in model.attention.parameters()]


@pytest.mark.parametrize("kw", [{"heads": 2}, {"heads": 4}, {"query": "top-down"}, {"query": "top-down", "heads": 2}])
def test_training_fast_path_gives_the_equations_numbers(kw):
    """The factored training path (the default in training) against Eqs. 1-5 as written, same masks."""
    model = AttentionSpec(D, dropout=0.25, **kw).build(toy(dropout=0.0)).train()
    spread_alpha(model)
    x = images()
    masks, draw = [], attention_module.dropout_mask
    with pytest.MonkeyPatch.context() as mp, torch.no_grad():
        mp.setattr(attention_module, "dropout_mask", lambda *a: masks.append(draw(*a)) or masks[-1])
        model(x)
    assert len(masks) == len(model.taps) * (2 if model.attention.query == "bottom-up" else 1)
    fast, plain = replay_training(model, x, masks, True), replay_training(model, x, masks, False)
    for f, p in zip(fast, plain):
        torch.testing.assert_close(f, p, rtol=1e-4, atol=1e-6)
    model.eval()
    with torch.no_grad():
        folded = model(x)
        model.attention.fast = False
        torch.testing.assert_close(folded, model(x), rtol=1e-5, atol=1e-6)


# --- top-down query --------------------------------------------------------------------------------

def test_top_down_query_is_made_of_pass_one_prediction():
    backbone = toy()
    model = AttentionSpec(D, query="top-down").build(backbone).eval()
    spread_alpha(model)
    x = images()
    with torch.no_grad():
        logits, acts = backbone.run(x)
        _, state = model(x, return_state=True)
        e = model.attention.class_queries
        torch.testing.assert_close(state.query, torch.softmax(logits, dim=1) @ e)  # q = Σ_c softmax(z)_c E_c
        # another prediction of pass 1 (the same activations otherwise): another query and other scores
        other = model.attention(acts, evidence=logits.roll(1, dims=1))
        assert not torch.allclose(other.query, state.query)
        assert not torch.allclose(other.scores[0], state.scores[0])
        # a confident prediction of class c makes the query E_c
        sure = model.attention(acts, evidence=torch.full_like(logits, -1e4).index_fill_(1, torch.tensor([3]), 1e4))
        torch.testing.assert_close(sure.query, e[3].expand_as(sure.query))
    assert state.queries is None  # keys only: W_k, no W_q
    assert [layer.proj.weight.shape[0 if t.kind == "conv" else 1] for layer, t in zip(model.attention.layers, model.taps)] \
        == [D] * len(model.taps)
    with pytest.raises(ValueError, match="class evidence"):
        model.attention(acts)


# --- fine-tuning and its control -------------------------------------------------------------------

def run_settings(**kw) -> SimpleNamespace:
    settings = dict(attn_dim=D, dropout=0.25, kq_norm=False, score_norm=False, iterations=1, lesion="full",
                    heads=1, query="bottom-up", finetune=True, finetune_lr=1e-3, attention=True)
    return SimpleNamespace(**(settings | kw))


def test_finetuning_trains_the_backbone_in_train_mode():
    backbone = toy()
    before = copy.deepcopy(backbone.state_dict())
    model, groups = runs.trained_model(run_settings(), backbone)
    assert [g.get("lr") for g in groups] == [None, 1e-3] and groups[1]["l2"] is False
    model.train()
    assert model.backbone.training and model.attention.training
    model.eval()
    assert not model.backbone.training
    frozen = AttentionSpec(D).build(toy()).train()
    assert not frozen.backbone.training and not any(p.requires_grad for p in frozen.backbone.parameters())
    step = Step(model, groups, TrainConfig(1, 1, lr=1e-3, l2=1e-5))
    model.train()
    step(images(), torch.arange(8) % 10, 1, 1)
    after = model.backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    assert step.decayed and all(id(p) not in {id(q) for q in model.backbone.parameters()} for p in step.decayed)


def backbone_after_one_step(attention: bool, alpha: float) -> dict:
    """The backbone's weights after one fine-tuning step, with attention (α = `alpha`) or as the control, as
    pipeline.runs.train_attention sets them up: fit's lr is the attention's (5e-3) with attention, the
    backbone's finetune_lr (1e-3) for the control, which has one group."""
    backbone = toy(dropout=0.0)  # no backbone dropout: one pass or two draw nothing
    run = run_settings(attention=attention)
    model, groups = runs.trained_model(run, backbone)
    if attention:
        with torch.no_grad():
            model.attention.alpha.fill_(alpha)
    step = Step(model, groups, TrainConfig(1, 1, lr=5e-3 if attention else run.finetune_lr, l2=1e-5))
    model.train()
    step(images(), torch.arange(8) % 10, 1, 1)
    return {k: v.clone() for k, v in backbone.state_dict().items()}


def test_the_control_differs_from_finetuning_only_by_the_attention():
    """With the attention the identity (α = 0), fine-tuning's backbone update is the control's exactly (same
    weights, batch, learning rate, no L2 on the backbone); with α ≠ 0 it is not."""
    control = backbone_after_one_step(False, 0.0)
    identity = backbone_after_one_step(True, 0.0)
    assert all(torch.equal(control[k], identity[k]) for k in control)
    attended = backbone_after_one_step(True, 0.5)
    assert any(not torch.equal(control[k], attended[k]) for k in control)


def test_finetuned_checkpoint_keeps_the_backbone_weights(tmp_path):
    backbone = toy()
    file = tmp_path / "backbone.pt"
    save_backbone(file, backbone, "fashion-mnist", [str(i) for i in range(10)])
    run = run_settings()
    model, groups = runs.trained_model(run, copy.deepcopy(backbone))
    spread_alpha(model)
    with torch.no_grad():
        model.backbone.convs[0].weight.mul_(1.5)  # as fine-tuning would: no longer the checkpoint's
    model.eval()
    runs.save_run_model(tmp_path / "seed-0.pt", run, model, file, {"run": "x"})
    loaded, meta = runs.load_run_model(tmp_path / "seed-0.pt", run, file, "cpu", (backbone, {}))
    assert meta["kind"] == runs.FINETUNED and meta["finetune"] is True
    assert loaded.backbone is not backbone and loaded.finetune
    with torch.no_grad():
        assert torch.equal(loaded.eval()(images()), model(images()))
    control = run_settings(attention=False)
    runs.save_run_model(tmp_path / "control.pt", control, model.backbone, file, {"run": "y"})
    net, meta = runs.load_run_model(tmp_path / "control.pt", control, file, "cpu", (backbone, {}))
    assert meta["kind"] == "backbone" and torch.equal(net.convs[0].weight, model.backbone.convs[0].weight)


# --- params validation -----------------------------------------------------------------------------

RUN = "attention.toy-fmnist-d16"
EXT = "extensions.v"


def with_extension(params: dict, **changes) -> dict:
    """The tiny params with one extension `v` of the d = 16 run, changing `changes`."""
    params = copy.deepcopy(params)
    params["extensions"] = {"v": {"run": "toy-fmnist-d16", "backbone": "toy-fmnist", "dataset": "fashion-mnist",
                                  **changes}}
    return params


@pytest.mark.parametrize("changes, expect", [
    ({"heads": 0}, f"{EXT}.heads: must be ≥ 1"),
    ({"heads": 3}, f"{EXT}.heads: 3 does not divide attn_dim = 16"),
    ({"heads": 2.0}, f"{EXT}.heads: expected an integer"),
    ({"query": "sideways"}, f"{EXT}.query: 'sideways' is not allowed; allowed: bottom-up, top-down"),
    ({"finetune": "yes"}, f"{EXT}.finetune: expected true or false"),
    ({"finetune": True}, f"{EXT}.finetune_lr: missing"),
    ({"finetune_lr": 1e-4}, f"{EXT}.finetune_lr: set without finetune: true"),
    ({"finetune": False, "finetune_lr": 1e-4, "heads": 2}, f"{EXT}.finetune_lr: set with finetune: false"),
    ({"finetune": True, "finetune_lr": 0}, f"{EXT}.finetune_lr: must be > 0"),
    ({"attention": "no"}, f"{EXT}.attention: expected true or false"),
    ({"attention": False}, f"{EXT}.attention: false is the fine-tuning control"),
    ({"attention": False, "finetune": True, "finetune_lr": 1e-4, "heads": 2},
     f"{EXT}.heads: 2 means nothing with attention: false"),
    ({"attention": False, "finetune": True, "finetune_lr": 1e-4, "iterations": 2},
     f"{EXT}.iterations: 2 means nothing with attention: false"),
    ({}, f"{EXT}: changes nothing of attention.toy-fmnist-d16"),
    ({"iterations": 1, "query": "bottom-up"}, f"{EXT}: changes nothing of attention.toy-fmnist-d16"),
    ({"run": "nope", "heads": 2}, f"{EXT}.run (an attention run): 'nope' is not allowed"),
    ({"backbone": "other", "heads": 2}, f"{EXT}.backbone: 'other' must match attention.toy-fmnist-d16.backbone"),
    ({"heads": 2, "colour": "red"}, f"{EXT}.colour: unknown key"),
])
def test_bad_extension_settings_name_the_key(tiny_params, changes, expect):
    with pytest.raises(ParamsError) as e:
        validate(with_extension(tiny_params, **changes))
    assert expect in str(e.value)


def test_an_extension_may_not_reuse_an_attention_runs_name(tiny_params):
    params = with_extension(tiny_params, heads=2)
    params["extensions"] = {"toy-fmnist-d4": params["extensions"]["v"]}
    with pytest.raises(ParamsError, match="extensions.toy-fmnist-d4: the name is an attention run's too"):
        validate(params)


@pytest.mark.parametrize("name, value", [("heads", 2), ("query", "top-down"), ("iterations", 2), ("finetune", True),
                                         ("attention", False)])
def test_an_attention_run_keeps_the_papers_settings(tiny_params, name, value):
    """Every analysis stage runs on every attention run, so a variant there is refused and pointed to extensions."""
    with pytest.raises(ParamsError) as e:
        validate(with_param(tiny_params, f"{RUN}.{name}", value))
    assert f"{RUN}.{name}: {value!r}: an attention run is the paper's GAttANet" in str(e.value)
    assert "`extensions:`" in str(e.value)


def test_variant_keys_are_optional_with_the_papers_defaults(tiny_params):
    run = validate(tiny_params).attention["toy-fmnist-d16"]
    assert (run.heads, run.query, run.finetune, run.finetune_lr, run.attention) == (1, "bottom-up", False, None, True)
    assert AttentionSpec.from_settings(run) == AttentionSpec(16, 0.25, False, False, 1, "full")
    changes = {"heads": 4, "query": "top-down", "iterations": 3, "finetune": True, "finetune_lr": 1e-4}
    p = validate(with_extension(tiny_params, **changes))
    ext = p.extensions["v"]
    assert ext.changes == changes
    variant = ext.variant_of(p.attention["toy-fmnist-d16"])
    spec = AttentionSpec.from_settings(variant)
    assert (spec.heads, spec.query, spec.iterations, spec.finetune) == (4, "top-down", 3, True)
    assert (variant.key, variant.seeds, variant.train_subset, variant.lr) == ("v", run.seeds, run.train_subset, run.lr)


# --- each variant through the stage ----------------------------------------------------------------

VARIANTS = {
    "v-iter2": {"iterations": 2},
    "v-heads2": {"heads": 2},
    "v-topdown": {"query": "top-down"},
    "v-finetune": {"finetune": True, "finetune_lr": 1.0e-4},
    "v-finetune-control": {"finetune": True, "finetune_lr": 1.0e-4, "attention": False},
}


@pytest.mark.slow
def test_each_variant_trains_through_the_extend_stage(project, caplog):
    """One tiny epoch of each variant through `gattanet-cli stage extend` on the tiny profile: the parameter count
    it reports is the spec's, its checkpoints load back and give the clean accuracy it reported, its intervals are
    the ones recomputed from its arrays, fine-tuning moved the backbone's weights, and the training log names
    the extend stage."""
    from typer.testing import CliRunner

    from gattanet.engine.checkpoint import load_backbone
    from gattanet.engine.evaluate import correct_batched
    from gattanet.engine.precision import autocast, autocast_dtype
    from pipeline import outputs
    from pipeline.cli import app
    from pipeline.config import load_params
    from pipeline.data_source import DataSource
    from pipeline.paths import backbone_path, extension_path
    from pipeline.recompute import extension_estimates, read_arrays

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["attention"]["toy-fmnist-d16"].update(seeds=[0, 1], train_subset=128)
    params["extensions"] = {k: {"run": "toy-fmnist-d16", "backbone": "toy-fmnist", "dataset": "fashion-mnist", **c}
                            for k, c in VARIANTS.items()}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    runner = CliRunner()
    for args in (["pretrain", "toy-fmnist"], ["train-attn", "toy-fmnist-d16"]):
        r = runner.invoke(app, ["stage", *args])
        assert r.exit_code == 0, r.output
    p = load_params(project / "params.yaml")
    cpu = torch.device("cpu")
    source = DataSource(p, "fashion-mnist", cpu)
    loaded = load_backbone(backbone_path("toy-fmnist"), device="cpu")
    for key in VARIANTS:
        caplog.clear()
        with caplog.at_level("INFO", logger="gattanet.engine.train"):
            r = runner.invoke(app, ["stage", "extend", key])
        assert r.exit_code == 0, (key, r.output)
        assert f"extend {key} seed 0 epoch 1" in caplog.text and "train-attn " not in caplog.text
        metrics = json.loads(outputs.EXTENSION_METRICS.path(key).read_text())
        variant = p.extensions[key].variant_of(p.attention["toy-fmnist-d16"])
        taps = ToyCNN(1, 10).taps()
        want = (AttentionSpec.from_settings(variant).trainable_params(taps) if variant.attention else 0) + \
            (sum(t.numel() for t in loaded[0].parameters()) if variant.finetune else 0)
        assert metrics["trainable_params"] == want, key
        assert metrics["changes"] == VARIANTS[key] and metrics["seeds"] == [0, 1]
        z = read_arrays(outputs.EXTENSION_CORRECT.path(key), outputs.EXTENSION_CORRECT.names)
        assert z["variant"].shape == z["gattanet"].shape == (2, 2, metrics["test_images"])
        again = extension_estimates(z["baseline"], z["gattanet"], z["variant"])
        assert json.loads(json.dumps(again["vs_gattanet"])) == metrics["vs_gattanet"]
        for seed in (0, 1):
            model, _ = runs.load_run_model(extension_path(key, seed), variant, backbone_path("toy-fmnist"), cpu, loaded)
            model.eval()
            loader = source.loader("test", p.noise.batch_size, sigma=0.0, noise_seed=p.seed, clip=p.noise.clip,
                                   limit=p.noise.test_subset)
            with torch.no_grad(), autocast(cpu, autocast_dtype(cpu, p.amp)):  # as the stage evaluates
                hits = correct_batched(lambda x: {"m": model(x)}, loader)
            assert hits["m"][:, 0].numpy().tolist() == z["variant"][seed, 0].tolist(), (key, seed)
            if variant.finetune:  # the backbone moved
                net = model.backbone if variant.attention else model
                assert not torch.equal(net.convs[0].weight, loaded[0].convs[0].weight), key
