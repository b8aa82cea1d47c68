"""params.yaml validation: every profile validates; each kind of bad value names its key."""

import copy

import pytest
import yaml

from pipeline.config import ParamsError, apply_override, load_params, validate
from tests.conftest import ROOT


@pytest.mark.parametrize("profile", ["default", "full", "tiny", "paper"])
def test_profiles_validate(profile):
    p = validate(yaml.safe_load((ROOT / "profiles" / f"{profile}.yaml").read_text()))
    assert p.attention and p.backbones


def test_params_yaml_is_the_default_profile():
    assert (ROOT / "params.yaml").read_text() == (ROOT / "profiles" / "default.yaml").read_text()


def _bad(params, dotted, value):
    p = copy.deepcopy(params)
    node = p
    *path, last = dotted.split(".")
    for k in path:
        node = node[k]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    with pytest.raises(ParamsError) as e:
        validate(p)
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
])
def test_bad_values_name_the_key(tiny_params, dotted, value, expect):
    assert expect in _bad(tiny_params, dotted, value)


def test_unknown_key_is_refused(tiny_params):
    tiny_params["attention"]["toy-fmnist-d16"]["atn_dim"] = 3
    with pytest.raises(ParamsError, match="atn_dim: unknown key; allowed: backbone"):
        validate(tiny_params)


def test_overrides_parse_yaml_values(tiny_params, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(tiny_params))
    p = load_params(path, ["attention.toy-fmnist-d16.attn_dim=8", "noise.clip=false"])
    assert p.attention["toy-fmnist-d16"].attn_dim == 8 and p.noise.clip is False
    with pytest.raises(ParamsError, match="unknown key"):
        apply_override(tiny_params, "attention.toy-fmnist-d16.dimension=8")
    with pytest.raises(ParamsError, match="KEY=VALUE"):
        apply_override(tiny_params, "attention")


def test_default_profile_is_planned_for_evidence():
    """The issue's floor for the default run: the whole training and test sets for the backbone and
    every evaluation, and at least three training seeds for the runs behind the headline claims."""
    p = validate(yaml.safe_load((ROOT / "profiles" / "default.yaml").read_text()))
    assert p.backbones["toy-fmnist"].train_subset == 0
    assert {k: r.attn_dim for k, r in p.attention.items()} == {"toy-fmnist-d16": 16, "toy-fmnist-d64": 64}
    assert all(len(r.seeds) >= 3 for r in p.attention.values())
    assert p.noise.test_subset == 0 and p.maps_test_subset == 0
    assert all(les.test_subset == 0 for les in p.lesions.values())
    assert p.noise.peak_sigma in p.noise.sigmas and 0.03 <= p.noise.peak_sigma <= 0.04
    full = validate(yaml.safe_load((ROOT / "profiles" / "full.yaml").read_text()))
    assert {r.attn_dim for r in full.attention.values()} >= {4, 16, 64}
    assert len(full.baselines.methods) == 9 and {les.mode for les in full.lesions.values()} == {"retrain"}
