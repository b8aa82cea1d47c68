"""Checkpoints: bit-exact round trips, refusal of foreign, corrupt, malicious and mismatched files."""

import os
import time
import zipfile

import pytest
import torch

import gattanet
from gattanet.models.attention import GlobalAttention
from gattanet.models.registry import build_backbone
from gattanet.engine.checkpoint import (CheckpointError, load_backbone, load_checkpoint, load_gattanet,
                                 save_backbone, save_checkpoint, save_gattanet, sha256_file)
from gattanet.models.gattanet import GAttANet
from gattanet.engine.placement import place
from gattanet.models.toy import ToyCNN

CLASSES = [f"c{i}" for i in range(10)]


def saved_toy(path, seed=0, num_classes=10, dataset="cifar10"):
    torch.manual_seed(seed)
    backbone = ToyCNN(3, num_classes, widths=(4, 8, 8), hidden=16)
    save_backbone(path, backbone, dataset, [f"c{i}" for i in range(num_classes)], {"seed": seed})
    return backbone


def trained_gattanet(backbone):
    torch.manual_seed(1)
    model = GAttANet(backbone, GlobalAttention(backbone.taps(), 3, kq_norm=True), lesion="cc.dd", iterations=2)
    with torch.no_grad():
        model.attention.alpha.uniform_(-0.5, 0.5)
    model.train()
    model(torch.rand(4, 3, 32, 32))  # moves the BatchNorm running stats away from their init
    return model.eval()


def test_checkpoint_layout_and_round_trip(tmp_path):
    path = tmp_path / "sub" / "c.pt"
    state = {"w": torch.randn(3, 2), "n": torch.tensor(7)}
    save_checkpoint(path, state, {"kind": "adapter", "taps": [1, 2]})
    raw = torch.load(path, weights_only=True)
    assert (raw["format"], raw["version"], raw["library_version"]) == ("gattanet", 1, gattanet.__version__)
    loaded, meta = load_checkpoint(path, expect={"kind": "adapter", "taps": (1, 2)})
    assert meta == {"kind": "adapter", "taps": [1, 2]}
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    with pytest.raises(CheckpointError, match=r"meta 'kind' is 'adapter', expected 'backbone'"):
        load_checkpoint(path, expect={"kind": "backbone"})
    assert sorted(os.listdir(path.parent)) == ["c.pt"]  # no temp files left


def test_failed_save_leaves_nothing(tmp_path):
    with pytest.raises(Exception):
        save_checkpoint(tmp_path / "c.pt", {"w": torch.zeros(1)}, {"bad": lambda: 0})  # not picklable
    assert os.listdir(tmp_path) == []


def test_toy_backbone_round_trip_is_bit_exact(tmp_path):
    path = tmp_path / "toy.pt"
    backbone = saved_toy(path)
    loaded, meta = load_backbone(path, expect={"arch": "toy", "dataset": "cifar10"})
    assert meta["kind"] == "backbone" and meta["widths"] == [4, 8, 8] and meta["hidden"] == 16
    assert meta["classes"] == CLASSES and meta["seed"] == 0 and meta["taps"][3] == {
        "name": "fc1", "kind": "dense", "shape": [16]}
    assert list(loaded.state_dict()) == list(backbone.state_dict())
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert all(p.requires_grad for p in loaded.parameters()) and not loaded.training
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded(x), backbone.eval()(x))


def test_resnet_backbone_round_trip_keeps_batchnorm_buffers(tmp_path):
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", 10, 1, input_size=32)
    backbone.train()(torch.rand(2, 1, 32, 32))  # non-trivial running stats
    save_backbone(tmp_path / "r.pt", backbone, "fashion-mnist", CLASSES)
    loaded, meta = load_backbone(tmp_path / "r.pt")
    assert (meta["arch"], meta["in_channels"], meta["input_size"]) == ("resnet18", 1, 32)
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in loaded.state_dict().items())
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(loaded(x), backbone.eval()(x))


def test_load_refuses_a_mismatched_architecture(tmp_path):
    saved_toy(tmp_path / "toy.pt")
    with pytest.raises(CheckpointError, match=r"toy.pt: meta 'arch' is 'toy', expected 'resnet18'"):
        load_backbone(tmp_path / "toy.pt", expect={"arch": "resnet18"})


def test_load_refuses_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    good = tmp_path / "toy.pt"
    saved_toy(good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pt: corrupt or truncated"):
        load_backbone(cut)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt: corrupt"):
        load_checkpoint(junk)
    foreign = tmp_path / "sd.pt"
    torch.save(ToyCNN().state_dict(), foreign)
    with pytest.raises(CheckpointError, match="sd.pt: not a gattanet checkpoint"):
        load_checkpoint(foreign)


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_load_refuses_a_pickle_that_carries_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "gattanet", "version": 1, "meta": {"kind": "backbone"},
                "state_dict": {}, "payload": Evil(marker)}, path)
    with pytest.raises(CheckpointError, match="evil.pt: refused to load"):
        load_checkpoint(path)
    assert not marker.exists()


def test_gattanet_round_trip_is_bit_exact(tmp_path):
    bpath, apath = tmp_path / "toy.pt", tmp_path / "att.pt"
    backbone = saved_toy(bpath)
    model = trained_gattanet(backbone)
    save_gattanet(apath, model, bpath, {"val_acc": 0.5})
    loaded, meta = load_gattanet(apath, bpath)
    assert meta["backbone_sha256"] == sha256_file(bpath)
    assert (meta["kind"], meta["attn_dim"], meta["lesion"], meta["iterations"], meta["kq_norm"]) == (
        "gattanet", 3, "cc.dd", 2, True)
    assert (meta["arch"], meta["dataset"], meta["num_classes"], meta["val_acc"]) == ("toy", "cifar10", 10, 0.5)
    ref = model.attention.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.attention.state_dict().items())
    assert (loaded.lesion, loaded.iterations) == ("cc.dd", 2)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded(x), model(x))
    assert all(not p.requires_grad for p in loaded.backbone.parameters())


def test_gattanet_refuses_a_backbone_it_was_not_trained_on(tmp_path):
    bpath, apath = tmp_path / "toy.pt", tmp_path / "att.pt"
    save_gattanet(apath, trained_gattanet(saved_toy(bpath)), bpath)
    saved_toy(tmp_path / "other.pt", seed=5)  # same configuration, different weights
    with pytest.raises(CheckpointError, match="other.pt: its weights are not those of the model's backbone"):
        save_gattanet(tmp_path / "att2.pt", trained_gattanet(saved_toy(tmp_path / "b.pt")), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="retrain the attention"):
        load_gattanet(apath, tmp_path / "other.pt")
    saved_toy(tmp_path / "svhn.pt", dataset="fashion-mnist")
    with pytest.raises(CheckpointError, match="dataset='cifar10' but backbone .* has dataset='fashion-mnist'"):
        load_gattanet(apath, tmp_path / "svhn.pt")
    saved_toy(tmp_path / "c100.pt", num_classes=100, dataset="cifar10")
    with pytest.raises(CheckpointError, match="num_classes=10 but backbone"):
        load_gattanet(apath, tmp_path / "c100.pt")
    torch.manual_seed(0)
    save_backbone(tmp_path / "r18.pt", build_backbone("resnet18", 10, 3), "cifar10", CLASSES)
    with pytest.raises(CheckpointError, match="arch='toy' but backbone .* has arch='resnet18'"):
        load_gattanet(apath, tmp_path / "r18.pt")
    with pytest.raises(CheckpointError, match="meta 'kind' is 'backbone', expected 'gattanet'"):
        load_gattanet(bpath, bpath)


def test_same_weights_saved_twice_are_the_same_bytes(tmp_path):
    """Different file names, 2 s apart (a zip timestamp has a 2 s resolution), another memory format,
    meta in another key order: the same sha256, for a backbone and for a GAttANet checkpoint."""
    first, second = tmp_path / "one", tmp_path / "two" / "deeper"
    backbone = saved_toy(first / "toy.pt")
    model = trained_gattanet(backbone)
    save_gattanet(first / "att.pt", model, first / "toy.pt", {"run": "k", "seed": 0})
    time.sleep(2.1)
    place(backbone, "cpu")  # channels_last weights: the bytes do not depend on the layout
    save_backbone(second / "other-name.pt", backbone, "cifar10", CLASSES, {"seed": 0})
    save_gattanet(second / "seed-0.pt", model, second / "other-name.pt", {"seed": 0, "run": "".join(["k"])})
    assert sha256_file(first / "toy.pt") == sha256_file(second / "other-name.pt")
    assert sha256_file(first / "att.pt") == sha256_file(second / "seed-0.pt")
    for path in (first / "toy.pt", first / "att.pt"):
        with zipfile.ZipFile(path) as z:
            assert {n.split("/")[0] for n in z.namelist()} == {"archive"}  # no (temp) file name inside
            assert {i.date_time for i in z.infolist()} == {(1980, 0, 0, 0, 0, 0)}
    loaded, meta = load_gattanet(second / "seed-0.pt", second / "other-name.pt")
    assert not {"seconds", "time", "date", "path"} & set(meta)  # nothing of when or where it was written
    ref = model.attention.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.attention.state_dict().items())
    assert sorted(os.listdir(second)) == ["other-name.pt", "seed-0.pt"]  # no temp files or folders left


def test_different_weights_are_different_bytes(tmp_path):
    saved_toy(tmp_path / "a.pt", seed=0)
    saved_toy(tmp_path / "b.pt", seed=1)
    assert sha256_file(tmp_path / "a.pt") != sha256_file(tmp_path / "b.pt")


@pytest.mark.parametrize("damage", ["truncated", "not a zip", "not ours"])
def test_unreadable_checkpoint_points_to_dvc_checkout_first(tmp_path, monkeypatch, damage):
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "good.pt"
    saved_toy(good)
    for path, stage in ((os.path.join("models", "backbones", "toy-fmnist.pt"), "pretrain@toy-fmnist"),
                        (os.path.join("models", "attention", "toy-fmnist-d16", "seed-1.pt"),
                         "train-attn@toy-fmnist-d16")):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if damage == "truncated":
            with open(path, "wb") as f:
                f.write(good.read_bytes()[: good.stat().st_size - 100])
        elif damage == "not a zip":
            with open(path, "wb") as f:
                f.write(b"PK\x03\x04 not a checkpoint")
        else:
            torch.save({"weights": torch.zeros(2)}, path)
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(path)
        message = str(e.value)
        checkout, repro = f"`dvc checkout --force {path}`", f"`dvc repro {stage}`"
        assert message.startswith(f"{path}: ") and checkout in message and repro in message
        assert message.index(checkout) < message.index(repro), message
