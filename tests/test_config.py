"""params.yaml validation: every profile validates; each kind of bad value names its key."""

import pytest
import yaml

from pipeline.config import ParamsError, apply_override, load_params, validate
from pipeline.profiles import available, compose
from tests.helpers import ROOT, with_param


@pytest.mark.parametrize("profile", available())
def test_profiles_validate(profile):
    p = validate(compose(profile))
    assert p.attention and p.backbones


def test_params_yaml_is_the_default_profile():
    assert (ROOT / "params.yaml").read_text() == (ROOT / "pipeline" / "profiles" / "default.yaml").read_text()


def _bad(params, dotted, value):
    with pytest.raises(ParamsError) as e:
        validate(with_param(params, dotted, value))
    return str(e.value)


@pytest.mark.parametrize("dotted, value, expect", [
    ("backbones.toy-fmnist.arch", "vgg", "allowed: toy, resnet18, resnet50"),
    ("backbones.toy-fmnist.dataset", "mnist", "backbones.toy-fmnist.dataset"),
    ("attention.toy-fmnist-d16.attn_dim", 0, "attention.toy-fmnist-d16.attn_dim: must be ≥ 1"),
    ("attention.toy-fmnist-d16.attn_dim", "16", "expected an integer"),
    ("attention.toy-fmnist-d16.lesion", "ccc", "has 3 characters but there are 5 taps"),
    ("attention.toy-fmnist-d16.lesion", "ccxdd", "position 2"),
    ("attention.toy-fmnist-d16.epochs", 0, "attention.toy-fmnist-d16.epochs: must be ≥ 1"),
    ("attention.toy-fmnist-d16.backbone", "nope", "attention.toy-fmnist-d16.backbone"),
    ("attention.toy-fmnist-d16.dataset", "cifar10", "must be its backbone's dataset"),
    ("attention.toy-fmnist-d16.lr", KeyError, "attention.toy-fmnist-d16.lr: missing"),
    ("noise.sigmas", [0.0, -0.1], "noise.sigmas[1]: must be ≥ 0"),
    ("noise.sigmas", [0.0, 0.1, 0.03], "must start at 0 (the clean gain) and increase strictly"),
    ("noise.sigmas", [0.03, 0.1], "must start at 0"),
    ("noise.peak_sigma", 0.05, "noise.peak_sigma: 0.05 must be one of noise.sigmas"),
    ("noise.peak_sigma", 0.0, "noise.peak_sigma: must be > 0"),
    ("attention.toy-fmnist-d16.seeds", [], "attention.toy-fmnist-d16.seeds: expected a non-empty list"),
    ("attention.toy-fmnist-d16.seeds", [0, 0], "seeds must be distinct"),
    ("attention.toy-fmnist-d16.seeds", [0, -1], "attention.toy-fmnist-d16.seeds[1]: must be ≥ 0"),
    ("attention.toy-fmnist-d16.lr", float("nan"), "attention.toy-fmnist-d16.lr: expected a finite number"),
    ("baselines.methods", "se", "baselines.methods: expected a list"),
    ("noise.clip", "yes", "noise.clip: expected true or false"),
    ("device", "tpu", "device: 'tpu' is not allowed"),
    ("lesions.toy-fmnist-d16.mode", "prune", "allowed: eval, retrain"),
    ("report.figures.fig2", "missing-run", "report.figures.fig2"),
    ("eval_batch_size", 0, "eval_batch_size: must be ≥ 1"),
    ("nproc", 0, "nproc: must be ≥ 1"),
    ("nproc", 2.0, "nproc: expected an integer"),
    ("seed", KeyError, "seed: missing"),
    ("noise.sigmas", [0.0], "with at least one σ > 0"),
    ("backbones.toy-fmnist.lr", float("inf"), "backbones.toy-fmnist.lr: expected a finite number"),
    ("lesions", {"nosuch": {"backbone": "toy-fmnist", "dataset": "fashion-mnist", "mode": "eval", "test_subset": 0}},
     "lesions (an attention run): 'nosuch' is not allowed"),
])
def test_bad_values_name_the_key(tiny_params, dotted, value, expect):
    assert expect in _bad(tiny_params, dotted, value)


def test_several_processes_cannot_share_one_named_gpu(tiny_params):
    tiny_params["nproc"], tiny_params["device"] = 2, "cuda:1"
    with pytest.raises(ParamsError, match="device: 'cuda:1' names one GPU, but nproc is 2"):
        validate(tiny_params)
    tiny_params["device"] = "cuda"
    assert validate(tiny_params).nproc == 2


def test_unknown_key_is_refused(tiny_params):
    tiny_params["attention"]["toy-fmnist-d16"]["atn_dim"] = 3
    with pytest.raises(ParamsError, match="atn_dim: unknown key; allowed: backbone"):
        validate(tiny_params)


def test_unknown_top_level_key_is_refused(tiny_params):
    tiny_params["epochs"] = 3
    with pytest.raises(ParamsError, match="^epochs: unknown key; allowed: profile, seed"):
        validate(tiny_params)


@pytest.mark.parametrize("method", ["wider-toy", "sk", "gattanet-scratch"])
def test_the_from_scratch_track_needs_a_toy_backbone(tiny_params, method):
    tiny_params["backbones"]["toy-fmnist"]["arch"] = "resnet18"
    tiny_params["attention"]["toy-fmnist-d16"]["lesion"] = "full"
    tiny_params["attention"]["toy-fmnist-d4"]["lesion"] = "full"
    tiny_params["baselines"]["methods"] = ["gattanet", method]
    with pytest.raises(ParamsError, match=f"baselines.methods: {method} is trained from scratch in the toy CNN's "
                                          "place and needs a toy backbone"):
        validate(tiny_params)


def test_exponent_floats_read_as_dvc_reads_them(tiny_params, tmp_path):
    """YAML 1.1 (PyYAML) reads `1e-3` as a string; DVC (YAML 1.2) as a number: we side with DVC."""
    from dvc.utils.serialize import parse_yaml

    text = yaml.safe_dump(tiny_params).replace("lr: 0.001", "lr: 1e-3")
    assert "lr: 1e-3" in text
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert load_params(path).attention["toy-fmnist-d16"].lr == 0.001
    assert parse_yaml(text, str(path))["attention"]["toy-fmnist-d16"]["lr"] == 0.001
    assert load_params(path, ["noise.peak_sigma=3e-2", "noise.sigmas=[0, 3e-2, 1E-1]"]).noise.sigmas == (0, 0.03, 0.1)


def test_every_section_reads_exactly_its_dataclass_fields(tiny_params):
    """The dataclasses are the schema: each params section has exactly the keys its class declares."""
    import dataclasses

    from pipeline.config import AttentionRun, NoiseCfg, Params

    p = validate(tiny_params)
    assert set(tiny_params) == {f.name for f in dataclasses.fields(Params)} - {"raw"}
    assert set(tiny_params["noise"]) == {f.name for f in dataclasses.fields(NoiseCfg)}
    from pipeline.config import REQUIRED

    keys, fields = set(tiny_params["attention"]["toy-fmnist-d16"]), dataclasses.fields(AttentionRun)
    # every required key, and the optional ones (the variants beyond the paper, with its defaults) may be left out
    assert {f.name for f in fields if f.metadata.get("default") is REQUIRED} - {"key"} <= keys
    assert keys <= {f.name for f in fields} - {"key"}
    assert p.attention["toy-fmnist-d16"].key == "toy-fmnist-d16" and p.data["fashion-mnist"].name == "fashion-mnist"


def test_overrides_parse_yaml_values(tiny_params, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(tiny_params))
    p = load_params(path, ["attention.toy-fmnist-d16.attn_dim=8", "noise.clip=false"])
    assert p.attention["toy-fmnist-d16"].attn_dim == 8 and p.noise.clip is False
    with pytest.raises(ParamsError, match=r"attention\.toy-fmnist-d16\.dimension: unknown key; allowed: .*attn_dim"):
        load_params(path, ["attention.toy-fmnist-d16.dimension=8"])
    with pytest.raises(ParamsError, match="attention.no-such-run is not a section"):
        apply_override(tiny_params, "attention.no-such-run.attn_dim=8")
    with pytest.raises(ParamsError, match="KEY=VALUE"):
        apply_override(tiny_params, "attention")


def test_default_profile_is_planned_for_evidence():
    """The issue's floor for the default run: the whole training and test sets for the backbone and
    every evaluation, and at least three training seeds for the runs behind the headline claims. Issue 35: the
    primary endpoint (d = 16) and its controls, trained to patience 3, take the default's time; d = 64 (the
    dimension claim) runs in full."""
    p = validate(compose("default"))
    assert p.backbones["toy-fmnist"].train_subset == 0
    assert {k: r.attn_dim for k, r in p.attention.items()} == {"toy-fmnist-d16": 16}
    assert set(p.controls) == {"toy-fmnist-d16"} and p.attention["toy-fmnist-d16"].patience == 3
    assert all(len(r.seeds) >= 3 for r in p.attention.values())
    assert p.noise.test_subset == 0 and p.maps.test_subset == 0
    assert all(les.test_subset == 0 for les in p.lesions.values())
    assert set(p.lesions) == set(p.attention)  # every attention run is dissected (issue 20)
    assert p.noise.peak_sigma in p.noise.sigmas and 0.03 <= p.noise.peak_sigma <= 0.04
    full = validate(compose("full"))
    assert {r.attn_dim for r in full.attention.values()} >= {4, 16, 64}
    assert len(full.baselines.methods) == 13 and full.lesions["toy-fmnist-d16"].mode == "retrain"
    assert {"toy-fmnist-d16", "toy-fmnist-d64"} <= set(full.lesions)


def test_a_param_with_a_default_may_be_left_out_and_is_still_checked():
    from dataclasses import dataclass

    from pipeline.config import integer, param, read

    @dataclass(frozen=True)
    class Section:
        a: int = param(integer(0))
        b: int = param(integer(0), default=3)

    assert read(Section, {"a": 1}, "s") == Section(1, 3)
    assert read(Section, {"a": 1, "b": 5}, "s").b == 5
    with pytest.raises(ParamsError, match=r"s\.a: missing \(required keys: a\)"):
        read(Section, {"b": 1}, "s")
    with pytest.raises(ParamsError, match="s.b: must be ≥ 0"):
        read(Section, {"a": 1, "b": -1}, "s")
    with pytest.raises(ParamsError, match=r"s\.c: unknown key; allowed: a, b"):
        read(Section, {"a": 1, "c": 1}, "s")


def test_loader_keys_belong_to_image_folders_only(tiny_params):
    assert validate(tiny_params).data["fashion-mnist"].workers == 4  # a default nobody reads
    for key, value in (("workers", 2), ("eval_cache", True), ("cache_dir", "x")):
        assert f"data.fashion-mnist.{key}: only an image-folder dataset (imagenet)" in \
            _bad(tiny_params, f"data.fashion-mnist.{key}", value)
