"""One attention-run spec: it builds the GAttANet, writes and reads the checkpoint's meta, counts the parameters
the cost plan and the baselines' budget use; `backbone_taps` lists taps without weights."""

import pytest
import torch

from gattanet.adapters.budget import within_budget
from gattanet.cost.rates import ModelSpec, placed_model
from gattanet.engine.checkpoint import load_gattanet, save_backbone, save_gattanet
from gattanet.models.describe import describe_model
from gattanet.models.lesion import full_pattern
from gattanet.models.registry import backbone_taps, build_backbone
from gattanet.build import build_model
from gattanet.models.spec import AttentionSpec


def toy(classes: int = 10, channels: int = 1):
    torch.manual_seed(0)
    return build_backbone("toy", classes, channels)


def test_full_means_no_lesion_and_a_pattern_is_kept():
    backbone = toy()
    full = AttentionSpec(8).build(backbone)
    assert AttentionSpec(8).pattern is None and full.lesion == full_pattern(backbone.taps()) == "cccdd"
    assert AttentionSpec(8, lesion="cc.dd").build(backbone).lesion == "cc.dd"
    assert AttentionSpec(8, lesion="cc.dd").build(backbone, lesion="c....").lesion == "c...."  # a per-run override
    assert AttentionSpec(8, lesion="cc.dd").label.endswith(",lesion=cc.dd") and "lesion" not in AttentionSpec(8).label
    with pytest.raises(ValueError, match="position 0"):
        AttentionSpec(8, lesion="dcc.d").build(backbone)


def test_the_spec_builds_what_it_says_and_counts_it_without_building_weights():
    backbone = toy()
    spec = AttentionSpec(6, dropout=0.1, kq_norm=True, score_norm=True, iterations=2)
    model = spec.build(backbone)
    att = model.attention
    assert (att.dim, att.dropout, att.kq_norm, att.score_norm, model.iterations) == (6, 0.1, True, True, 2)
    assert float(att.alpha.detach().abs().sum()) == 0  # starts as its backbone
    assert spec.trainable_params(backbone.taps()) == sum(p.numel() for p in model.attention_parameters())
    rng = torch.random.get_rng_state()
    counted = AttentionSpec(16).trainable_params(backbone_taps("toy", 10, 3, 32))
    assert torch.equal(rng, torch.random.get_rng_state())  # the meta device draws nothing
    assert counted == describe_model("toy", "cifar10", 16)["attention_params"]


def test_checkpoint_meta_is_the_specs_and_reads_back_to_it(tmp_path):
    backbone = toy()
    save_backbone(tmp_path / "b.pt", backbone, "fashion-mnist", [str(c) for c in range(10)])
    spec = AttentionSpec(4, dropout=0.3, lesion="c.cdd")
    model = spec.build(backbone)
    with torch.no_grad():
        model.attention.alpha.fill_(0.5)
    meta = save_gattanet(tmp_path / "a.pt", model, tmp_path / "b.pt")
    assert {k: meta[k] for k in spec.meta()} == spec.meta()
    assert AttentionSpec.from_meta(meta) == AttentionSpec.of(model) == spec
    loaded, _ = load_gattanet(tmp_path / "a.pt", tmp_path / "b.pt")
    assert AttentionSpec.of(loaded) == spec
    assert all(torch.equal(a, b) for a, b in zip(loaded.attention.state_dict().values(),
                                                model.attention.state_dict().values()))
    full = AttentionSpec(4).build(backbone)  # "full" is recorded as the pattern it stands for
    assert AttentionSpec.of(full).lesion == "cccdd" and AttentionSpec.of(full).pattern == "cccdd"


def test_backbone_taps_are_the_built_backbones_and_unknown_archs_are_refused():
    assert list(backbone_taps("toy", 10, 1, 32)) == toy().taps()
    resnet = backbone_taps("resnet18", 1000, 3, 64)
    assert [t.name for t in resnet] == ["layer1", "layer2", "layer3", "layer4", "avgpool", "logits"]
    assert resnet[-1].shape == (1000,)
    with pytest.raises(ValueError, match="unknown arch"):
        backbone_taps("vgg", 10, 3, 32)


@pytest.mark.parametrize("kind", ["backbone", "gattanet", "se", "wider-toy"])
def test_build_model_makes_each_kind_over_the_backbone_at_the_gattanet_budget(kind):
    backbone = toy()
    spec = AttentionSpec(16)
    budget = spec.trainable_params(backbone.taps())
    built = build_model(kind, backbone, spec)
    n = sum(p.numel() for p in built.trainable)
    if kind == "backbone":
        assert built.model is backbone and n == sum(p.numel() for p in backbone.parameters())
    elif kind == "gattanet":
        assert n == budget and built.width is None and built.model.backbone is backbone
    elif kind == "se":
        assert isinstance(built.width, float) and within_budget(n, budget)
        assert all(not p.requires_grad for p in backbone.parameters())
    else:
        base = sum(p.numel() for p in backbone.parameters())
        assert set(built.width) == {"widths", "hidden"} and abs(n - (base + budget)) < budget  # nearer the target than the backbone
    plan_model, plan_trainable = placed_model(ModelSpec("toy", 1, 32, 10, kind, spec), toy(), "cpu")
    assert type(plan_model) is type(built.model) and sum(p.numel() for p in plan_trainable) == n
    if kind != "backbone":
        with pytest.raises(ValueError, match="attention settings"):
            build_model(kind, backbone)
