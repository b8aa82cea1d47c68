"""Backbones: parameter counts, taps, transforms, ResNet weights handling, describe_model()."""

import subprocess
import sys

import pytest
import torch
import torchvision

from gattanet.models.backbone import Backbone
from gattanet.models.registry import ARCHS, build_backbone
from gattanet.models.describe import describe_model
from gattanet.models.resnet import ResNetBackbone, WeightsError, imagenet_cache_path
from gattanet.models.toy import ToyCNN


def n_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def shapes(taps):
    return [(t.name, t.kind, t.shape) for t in taps]


# --- toy -------------------------------------------------------------------------------------

def test_toy_parameter_counts_match_the_paper():
    assert n_params(ToyCNN(3, 10)) == 620_362
    assert n_params(ToyCNN(3, 100)) == 643_492


def test_toy_widths_and_hidden_change_the_count_as_the_layers_say():
    m = ToyCNN(1, 10, widths=(8, 16), hidden=32, input_size=28)  # 28 -> 14 -> 7
    expected = (1 * 9 * 8 + 8) + (8 * 9 * 16 + 16) + (16 * 7 * 7 * 32 + 32) + (32 * 10 + 10)
    assert n_params(m) == expected
    assert [t.name for t in m.taps()] == ["conv1", "conv2", "fc1", "logits"]


def test_toy_taps():
    assert shapes(ToyCNN(3, 10).taps()) == [
        ("conv1", "conv", (32, 32, 32)), ("conv2", "conv", (64, 16, 16)), ("conv3", "conv", (128, 8, 8)),
        ("fc1", "dense", (256,)), ("logits", "dense", (10,))]


def test_toy_rejects_bad_sizes():
    with pytest.raises(ValueError, match="too small"):
        ToyCNN(3, 10, input_size=4)
    with pytest.raises(ValueError, match="positive"):
        ToyCNN(3, 10, widths=())


def test_run_applies_transforms_and_continues_with_them():
    torch.manual_seed(0)
    m = ToyCNN(3, 10).eval()
    x = torch.randn(2, 3, 32, 32)
    logits, acts = m.run(x)
    assert torch.equal(logits, m(x))
    assert [tuple(a.shape) for a in acts] == [(2, 32, 32, 32), (2, 64, 16, 16), (2, 128, 8, 8), (2, 256), (2, 10)]
    # zeroing conv3 leaves fc1 = relu(bias): the network went on with the transformed value
    _, acts2 = m.run(x, [None, None, lambda a: a * 0, None, None])
    assert torch.equal(acts2[0], acts[0]) and torch.equal(acts2[2], torch.zeros_like(acts[2]))
    assert torch.equal(acts2[3], torch.relu(m.fc1.bias).expand(2, -1))
    with pytest.raises(ValueError, match="2 transforms for 5 taps"):
        m.run(x, [None, None])


def test_build_backbone_validates():
    with pytest.raises(ValueError, match="allowed: toy, resnet18, resnet50"):
        build_backbone("vgg", 10, 3)
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_backbone("toy", 10, 3, weights="imagenet")
    with pytest.raises(ValueError, match="no extra arguments"):
        build_backbone("resnet18", 10, 3, hidden=3)
    m = build_backbone("toy", 100, 1, hidden=64)
    assert (m.arch, m.num_classes, m.in_channels, m.input_size, m.hidden) == ("toy", 100, 1, 32, 64)
    assert ARCHS == ("toy", "resnet18", "resnet50")


def test_protocol_registry_and_backbones_import_without_a_cycle():
    """gattanet.models.backbone (the protocol) imports no backbone and toy.py imports no registry; the registry
    leaves torchvision to the ResNets' first build."""
    code = ("import sys, gattanet.models.toy\n"
            "assert 'gattanet.models.registry' not in sys.modules and 'gattanet.models.resnet' not in sys.modules\n"
            "import gattanet.models.registry\n"
            "assert 'torchvision' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert issubclass(ToyCNN, Backbone) and issubclass(ResNetBackbone, Backbone)


# --- ResNets ---------------------------------------------------------------------------------

def test_resnet_parameter_counts_and_key_layout_are_torchvisions():
    with torch.device("meta"):
        r18, r50 = ResNetBackbone("resnet18"), ResNetBackbone("resnet50")
        tv18 = torchvision.models.resnet18()
    assert n_params(r18) == 11_689_512
    assert n_params(r50) == 25_557_032
    assert list(r18.state_dict()) == list(tv18.state_dict())


@torch.no_grad()
def test_resnet18_taps_at_224_and_32():
    torch.manual_seed(0)
    m = ResNetBackbone("resnet18").eval()
    assert shapes(m.taps()) == [
        ("layer1", "conv", (64, 56, 56)), ("layer2", "conv", (128, 28, 28)), ("layer3", "conv", (256, 14, 14)),
        ("layer4", "conv", (512, 7, 7)), ("avgpool", "dense", (512,)), ("logits", "dense", (1000,))]
    small = build_backbone("resnet18", 10, 1, input_size=32)
    assert shapes(small.taps()) == [
        ("layer1", "conv", (64, 8, 8)), ("layer2", "conv", (128, 4, 4)), ("layer3", "conv", (256, 2, 2)),
        ("layer4", "conv", (512, 1, 1)), ("avgpool", "dense", (512,)), ("logits", "dense", (10,))]
    logits, acts = small.eval().run(torch.randn(2, 1, 32, 32))
    assert logits.shape == (2, 10) and torch.equal(acts[-1], logits)


@torch.no_grad()
def test_resnet50_taps():
    with torch.device("meta"):
        assert shapes(ResNetBackbone("resnet50").taps()) == [
            ("layer1", "conv", (256, 56, 56)), ("layer2", "conv", (512, 28, 28)),
            ("layer3", "conv", (1024, 14, 14)), ("layer4", "conv", (2048, 7, 7)),
            ("avgpool", "dense", (2048,)), ("logits", "dense", (1000,))]
    m = ResNetBackbone("resnet50", num_classes=10, input_size=64)  # a real forward, kept small
    assert shapes(m.taps()) == [
        ("layer1", "conv", (256, 16, 16)), ("layer2", "conv", (512, 8, 8)), ("layer3", "conv", (1024, 4, 4)),
        ("layer4", "conv", (2048, 2, 2)), ("avgpool", "dense", (2048,)), ("logits", "dense", (10,))]


def test_taps_dry_run_leaves_batchnorm_statistics_and_mode_alone():
    m = build_backbone("resnet18", 10, 3).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.taps()
    assert m.training and all(mod.training for mod in m.modules())
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())


def test_resnet_loads_a_state_dict_file_and_explains_bad_ones(tmp_path):
    torch.manual_seed(0)
    src = torchvision.models.resnet18(num_classes=10)
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    m = ResNetBackbone("resnet18", num_classes=10, weights=path)
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in m.state_dict().items())
    with pytest.raises(WeightsError, match=r"wrong shapes: fc.weight \(10, 512\) \(expected \(1000, 512\)\)"):
        ResNetBackbone("resnet18", weights=path)
    with pytest.raises(WeightsError, match="missing keys: layer1.0.conv3.weight"):  # bottlenecks
        ResNetBackbone("resnet50", num_classes=10, weights=path)
    with pytest.raises(WeightsError, match="does not exist"):
        ResNetBackbone("resnet18", weights=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="corrupt"):
        ResNetBackbone("resnet18", num_classes=10, weights=bad)


def test_imagenet_weights_come_only_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = imagenet_cache_path("resnet18")
    assert cached == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(WeightsError, match="not in the local torch hub cache") as e:
        ResNetBackbone("resnet18", weights="imagenet")
    assert str(cached) in str(e.value) and "download.pytorch.org" in str(e.value)
    assert not cached.exists()  # nothing was downloaded
    with pytest.raises(WeightsError, match="1000 classes"):
        ResNetBackbone("resnet18", num_classes=10, weights="imagenet")

    torch.manual_seed(0)
    fake = torchvision.models.resnet18().state_dict()  # stands in for the real file, same layout
    cached.parent.mkdir(parents=True)
    torch.save(fake, cached)
    m = ResNetBackbone("resnet18", weights="imagenet")
    assert all(torch.equal(v, fake[k]) for k, v in m.state_dict().items())
    grey = ResNetBackbone("resnet18", in_channels=1, weights="imagenet")
    assert torch.allclose(grey.conv1.weight, fake["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(grey.layer4[1].conv2.weight, fake["layer4.1.conv2.weight"])


# --- describe --------------------------------------------------------------------------------

def test_describe_counts_and_taps():
    d = describe_model("toy", "cifar10", 16)
    assert (d["backbone_params"], d["attention_params"]) == (620_362, 15_781)
    assert d["input_shape"] == [3, 32, 32] and d["num_classes"] == 10
    assert d["taps"][2] == {"name": "conv3", "kind": "conv", "shape": [128, 8, 8]}
    r = describe_model("resnet18", "imagenet", 16, kq_norm=True, score_norm=True)
    assert r["backbone_params"] == 11_689_512 and r["input_shape"] == [3, 224, 224]
    assert r["taps"][-1] == {"name": "logits", "kind": "dense", "shape": [1000]}
    # keys+queries: 1x1 convs with bias on layer1-4, per-unit vectors on avgpool/logits, 2 BNs (2d) per tap, α
    convs = sum(2 * (c * 16 + 16) for c in (64, 128, 256, 512))
    assert r["attention_params"] == convs + 2 * 16 * (512 + 1000) + 6 * 2 * 2 * 16 + 6


@pytest.mark.parametrize("args, match", [
    (("vgg", "cifar10", 16), "allowed: toy, resnet18, resnet50"),
    (("toy", "mnist", 16), "allowed: fashion-mnist, fashion-clutter, cifar10"),
    (("toy", "cifar10", 0), ">= 1"),
])
def test_describe_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        describe_model(*args)
