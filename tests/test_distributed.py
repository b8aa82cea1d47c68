"""Data-parallel training under torchrun on the CPU (gloo, 2 processes): the same training as one
process at the same global batch, a kill and resume, rank 0 as the only writer, and the stage relaunch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gattanet.data.datasets import TensorData
from gattanet.world import SINGLE, World
from gattanet.data.loader import Finish, FolderLoader, TensorLoader
from pipeline.cli import app

from tests.helpers import project_env

WORKER = Path(__file__).with_name("ddp_worker.py")
TOLERANCE = 2e-6  # relative to the largest weight: what float sums in another order can move


def run_worker(out: Path, mode: str, nproc: int, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    launcher = [sys.executable] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    r = subprocess.run([*launcher, str(WORKER), str(out), mode, *extra], env=project_env() | {"OMP_NUM_THREADS": "1"},
                       capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def load(path: Path) -> dict:
    return torch.load(path, weights_only=False)


def test_shares_split_every_batch_into_contiguous_parts():
    for n in (2, 7, 32, 33):
        for size in (1, 2, 3):
            parts = [World(r, size).share(n) for r in range(size)]
            assert [i for p in parts for i in range(n)[p]] == list(range(n))
            assert max(len(range(n)[p]) for p in parts) - min(len(range(n)[p]) for p in parts) <= 1


@pytest.mark.slow  # two torchrun processes (30 s each on an AVX2 CPU): `make test`, not `make test-fast`
@pytest.mark.parametrize("mode", ["attention", "backbone"])
def test_two_processes_train_like_one_at_the_same_global_batch(tmp_path, mode):
    run_worker(tmp_path / "one.pt", mode, 1)
    run_worker(tmp_path / "two.pt", mode, 2)
    one, two = load(tmp_path / "one.pt"), load(tmp_path / "two.pt")
    assert (one["world"], two["world"]) == (1, 2)
    for k, w in one["state"].items():
        gap = (w - two["state"][k]).abs().max().item()
        assert gap <= TOLERANCE * max(1.0, w.abs().max().item()), (k, gap)
    for a, b in zip(one["history"], two["history"], strict=True):
        assert a["train_acc"] == b["train_acc"] and a["val_acc"] == b["val_acc"]  # counts: exact
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
    moved = max((w - one["initial"][k]).abs().max().item() for k, w in one["state"].items())
    assert moved > 1000 * TOLERANCE, f"training moved the weights by {moved}: the comparison would be empty"


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_same_weights(tmp_path):
    resume = tmp_path / "resume.pt"
    run_worker(tmp_path / "whole.pt", "backbone", 2)
    killed = run_worker(tmp_path / "killed.pt", "backbone", 2, "--kill-at-epoch", "3", "--resume", str(resume),
                        check=False)
    assert killed.returncode != 0 and not (tmp_path / "killed.pt").exists() and resume.exists()
    run_worker(tmp_path / "killed.pt", "backbone", 2, "--resume", str(resume))
    whole, resumed = load(tmp_path / "whole.pt"), load(tmp_path / "killed.pt")
    assert resumed["resumed_seconds"] > 0
    for k, w in whole["state"].items():
        assert torch.equal(w, resumed["state"][k]), k
    assert [h["val_acc"] for h in whole["history"]] == [h["val_acc"] for h in resumed["history"]]
    assert not resume.exists()


def _data(n: int) -> TensorData:
    return TensorData(torch.zeros(n, 1, 8, 8, dtype=torch.uint8), torch.arange(n) % 2, (0.5,), (0.5,), ("a", "b"))


def test_each_rank_gets_its_share_of_every_global_batch():
    data = _data(11)
    data.labels = torch.arange(11)  # labels = indices, to see which images each rank got
    whole = [y.tolist() for _, y in TensorLoader(data, 4, shuffle=True, seed=3).epoch(1)]
    ranks = [[y.tolist() for _, y in TensorLoader(data, 4, shuffle=True, seed=3, world=World(r, 2)).epoch(1)]
             for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == whole
    assert [len(b) for b in ranks[0]] == [2, 2, 2] and [len(b) for b in ranks[1]] == [2, 2, 1]


def test_a_batch_too_small_to_share_is_refused():
    with pytest.raises(ValueError, match="cannot be shared by 2 processes"):
        TensorLoader(_data(9), 4, world=World(0, 2))  # the last batch holds 1 image
    with pytest.raises(ValueError, match="cannot be shared by 3 processes"):
        FolderLoader(list(zip(torch.zeros(4, 1, 2, 2), range(4))), 2, Finish((0,), (1,)), workers=0,
                     world=World(1, 3))


def test_fit_refuses_a_loader_sharded_for_another_world():
    from gattanet.engine.train import TrainConfig, fit

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    loader = TensorLoader(_data(8), 4, world=World(1, 2))
    with pytest.raises(ValueError, match="sharded for"):
        fit(model, model.parameters(), loader, TensorLoader(_data(8), 4), TrainConfig(epochs=1, patience=1, lr=0.1))
    assert TensorLoader(_data(8), 4).world == SINGLE


# ---------------------------------------------------------------- the stage, through the CLI


@pytest.mark.slow
def test_train_attn_with_nproc_2_relaunches_under_torchrun_and_matches_one_process(project):
    runner = CliRunner()
    exact = ["-S", "amp=false", "-S", "attention.toy-fmnist-d4.dropout=0.0"]  # fp32, no per-rank draws
    assert runner.invoke(app, ["stage", "pretrain", "toy-fmnist"]).exit_code == 0
    metrics = project / "results/train-attn/toy-fmnist-d4/metrics.json"
    r = runner.invoke(app, ["stage", "train-attn", "toy-fmnist-d4", *exact])
    assert r.exit_code == 0, r.output
    one = json.loads(metrics.read_text())
    metrics.unlink()
    r = runner.invoke(app, ["stage", "train-attn", "toy-fmnist-d4", *exact, "-S", "nproc=2"])
    assert r.exit_code == 0, r.output
    assert "2 processes under torchrun" in r.output
    two = json.loads(metrics.read_text())
    assert not list((project / ".gattanet/resume").glob("train-attn-*")), "resume files left behind"
    for a, b in zip(one["per_seed"], two["per_seed"], strict=True):
        assert a["val_acc"] == b["val_acc"] and a["epochs_run"] == b["epochs_run"]
        assert abs(a["gattanet_acc"] - b["gattanet_acc"]) <= 1 / one["test_images"]  # one image at most
        assert b["alpha"] == pytest.approx(a["alpha"], rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_a_failing_rank_fails_the_stage_with_its_exit_code(project):
    """A training bug in the workers (here: an attention run whose batch of 1 cannot be shared) makes the
    relaunching stage exit non-zero and write nothing."""
    r = CliRunner().invoke(app, ["stage", "pretrain", "toy-fmnist", "-S", "nproc=2",
                                 "-S", "backbones.toy-fmnist.batch_size=1"])
    assert r.exit_code != 0
    assert "torchrun exited with" in r.output
    assert not (project / "models/backbones/toy-fmnist.pt").exists()


def test_sync_batchnorms_converts_plain_batchnorms_and_keeps_unit_batchnorm():
    """On CUDA the DDP wrapper syncs batch norms; attention's UnitBatchNorm (dense taps, kq_norm) reshapes
    its input, so it must stay itself (torch's convert_sync_batchnorm would turn it into a plain one)."""
    from gattanet.models.attention import GlobalAttention, UnitBatchNorm
    from gattanet.engine.distributed import sync_batchnorms
    from gattanet.models.gattanet import GAttANet
    from gattanet.models.toy import ToyCNN

    torch.manual_seed(0)
    backbone = ToyCNN(in_channels=1, num_classes=4, widths=(8, 16, 16), hidden=32, dropout=0.0, input_size=16)
    model = GAttANet(backbone, GlobalAttention(backbone.taps(), 8, kq_norm=True)).eval()
    units = [m for m in model.modules() if type(m) is UnitBatchNorm]
    plain = [m for m in model.modules() if type(m) in (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)]
    assert units and plain
    x = torch.rand(3, 1, 16, 16)
    before = model(x)
    sync_batchnorms(model)
    assert all(any(m is u for m in model.modules()) for u in units)
    assert not any(type(m) in (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d) for m in model.modules())
    assert sum(type(m) is torch.nn.SyncBatchNorm for m in model.modules()) == len(plain)
    assert torch.equal(model(x), before)  # eval: the same running statistics, the same logits
