"""Faults and bad input: kill and resume, atomic outputs, corrupt or hostile inputs, NaN, concurrent runs."""

import json
import logging
import os
import signal
import subprocess
import time

import pytest
import torch
import yaml
from typer.testing import CliRunner

from gattanet.io import atomic_path, write_json
from pipeline.cli import app
from pipeline.profiles import compose
from tests.helpers import make_project, project_env, sh, write_fashion_mnist
from tests.test_hostile import hashes

runner = CliRunner()


def tiny(**backbone) -> dict:
    params = compose("tiny")
    params["backbones"]["toy-fmnist"].update(backbone)
    return params


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


# ---------------------------------------------------------------- 1. kill -9 and resume

KILLABLE = {  # stage -> (the stage it needs, its resume file, its checkpoint, its metrics)
    "pretrain@toy-fmnist": ("data@fashion-mnist", "pretrain-toy-fmnist", "models/backbones/toy-fmnist.pt",
                            "results/pretrain/toy-fmnist/metrics.json"),
    "train-attn@toy-fmnist-d16": ("pretrain@toy-fmnist", "train-attn-toy-fmnist-d16-seed0",
                                  "models/attention/toy-fmnist-d16/seed-0.pt",
                                  "results/train-attn/toy-fmnist-d16/metrics.json"),
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(KILLABLE))
def test_kill_during_training_then_repro_resumes_and_matches(tmp_path, stage):
    before, resume_name, ckpt, metrics = KILLABLE[stage]
    params = tiny(epochs=4, patience=4, train_subset=400)
    params["attention"]["toy-fmnist-d16"].update(epochs=4, patience=4, train_subset=400)
    clean = make_project(tmp_path / "clean", params)
    sh(["dvc", "repro", stage], clean)

    killed = make_project(tmp_path / "killed", params)
    sh(["dvc", "repro", before], killed)
    resume = killed / ".gattanet/resume" / f"{resume_name}.pt"
    proc = subprocess.Popen(["dvc", "repro", stage], cwd=killed, env=project_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not resume.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert resume.exists() and not (killed / ckpt).exists()

    r = sh(["dvc", "repro", stage], killed)
    assert "resuming after epoch" in r.stdout + r.stderr
    assert not resume.exists()
    a = json.loads((clean / metrics).read_text())
    b = json.loads((killed / metrics).read_text())
    assert without_seconds([a]) == without_seconds([b])
    sa = torch.load(clean / ckpt, weights_only=True)["state_dict"]
    sb = torch.load(killed / ckpt, weights_only=True)["state_dict"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class Killed(Exception):
    """What the fault injection raises: the process dying between two epochs."""


class KillAt:
    """A training loader that dies when epoch `at` starts, after `sleep` seconds in each epoch before it
    (training time that the resumed run must count); otherwise the wrapped loader, attributes and all."""

    def __init__(self, loader, at: int, sleep: float):
        self.loader, self.at, self.sleep = loader, at, sleep

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __len__(self):
        return len(self.loader)

    def epoch(self, e):
        if e == self.at:
            raise Killed(f"killed at the start of epoch {e}")
        time.sleep(self.sleep)
        yield from self.loader.epoch(e)


def test_killed_pretrain_resumes_only_under_the_same_settings_and_counts_all_its_seconds(project, monkeypatch,
                                                                                          caplog):
    import pipeline.stages.pretrain as pretrain
    from gattanet.engine.train import fit
    from pipeline.curves import read_curves

    kill = {"on": True}

    def killable_fit(model, params, train, *args, **kw):
        return fit(model, params, KillAt(train, at=3, sleep=0.5) if kill["on"] else train, *args, **kw)

    monkeypatch.setattr(pretrain, "fit", killable_fit)
    stage = ["stage", "pretrain", "toy-fmnist", "-S", "backbones.toy-fmnist.epochs=4",
             "-S", "backbones.toy-fmnist.patience=4"]
    resume = project / ".gattanet/resume/pretrain-toy-fmnist.pt"
    metrics = project / "results/pretrain/toy-fmnist/metrics.json"
    curves = project / "results/pretrain/toy-fmnist/live"  # DVCLive's folder (pipeline/curves.py)

    def killed_after_epoch_2() -> float:
        kill["on"] = True
        r = runner.invoke(app, stage)
        assert isinstance(r.exception, Killed), r.output
        saved = torch.load(resume, weights_only=True)
        assert saved["epoch"] == 2 and not metrics.exists()
        kill["on"] = False
        caplog.clear()
        return saved["seconds"]

    killed_after_epoch_2()
    with caplog.at_level(logging.INFO, logger="gattanet.engine.train"):  # another batch size: start over
        r = runner.invoke(app, stage + ["-S", "backbones.toy-fmnist.batch_size=32"])
    assert r.exit_code == 0, r.output
    assert "starting fresh; it differs in train_data.batch_size: 64 -> 32" in caplog.text
    assert "context.run" in caplog.text and "resuming" not in caplog.text
    assert [r["epoch"] for r in read_curves(curves)[""]] == [1, 2, 3, 4]
    assert not resume.exists()
    metrics.unlink()

    before = killed_after_epoch_2()  # the same settings: carry on after epoch 2
    with caplog.at_level(logging.INFO, logger="gattanet.engine.train"):
        r = runner.invoke(app, stage)
    assert r.exit_code == 0, r.output
    assert "resuming after epoch 2" in caplog.text and "starting fresh" not in caplog.text
    assert [r["epoch"] for r in read_curves(curves)[""]] == [1, 2, 3, 4]
    assert json.loads(metrics.read_text())["seconds"] >= before >= 1.0  # the 2 slow epochs before the kill
    assert not resume.exists()


# ---------------------------------------------------------------- 2. atomic outputs

def test_atomic_write_leaves_the_old_file_on_a_crash(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"good": True})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"half": ')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"good": True}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_torch_save_through_atomic_path_records_the_target_name_not_a_temp_one(tmp_path):
    import zipfile

    for n in range(2):
        with atomic_path(tmp_path / f"try{n}" / "fashion-mnist.pt") as tmp:
            torch.save({"x": torch.arange(3)}, tmp)
    a, b = ((tmp_path / f"try{n}" / "fashion-mnist.pt").read_bytes() for n in range(2))
    assert a == b
    assert {n.split("/")[0] for n in zipfile.ZipFile(tmp_path / "try0" / "fashion-mnist.pt").namelist()} == {
        "fashion-mnist"}
    assert sorted(os.listdir(tmp_path / "try0")) == ["fashion-mnist.pt"]


def test_crashed_stage_keeps_previous_outputs(project, monkeypatch):
    assert runner.invoke(app, ["stage", "pretrain", "toy-fmnist"]).exit_code == 0
    before = {p: p.read_bytes() for p in (project / "models").rglob("*.pt")}
    before |= {p: p.read_bytes() for p in (project / "results").rglob("*.*")}
    r = runner.invoke(app, ["stage", "pretrain", "toy-fmnist", "-S", "backbones.toy-fmnist.lr=1.0e+30"])
    assert r.exit_code == 1
    assert {p: p.read_bytes() for p in before} == before


# ---------------------------------------------------------------- 4. missing or corrupt inputs

def test_missing_dataset_names_path_and_remedy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = tiny()
    params["data"]["fashion-mnist"]["root"] = str(tmp_path / "nowhere")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    r = runner.invoke(app, ["stage", "data", "fashion-mnist"])
    assert r.exit_code == 1 and str(tmp_path / "nowhere") in r.output and "dataset-fashion-mnist" in r.output
    assert not (tmp_path / "data").exists()


def test_truncated_idx_file_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = write_fashion_mnist(tmp_path / "fm", 50, 20)
    f = root / "train-images-idx3-ubyte.gz"
    import gzip
    raw = gzip.decompress(f.read_bytes())
    f.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    params = tiny()
    params["data"]["fashion-mnist"]["root"] = str(root)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    r = runner.invoke(app, ["stage", "data", "fashion-mnist"])
    assert r.exit_code == 1 and "train-images-idx3-ubyte.gz" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "data/fashion-mnist.pt").exists()


def test_corrupt_checkpoint_is_refused_clearly(project):
    ckpt = project / "models/backbones/toy-fmnist.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"\x80\x04 not a checkpoint")
    r = runner.invoke(app, ["stage", "train-attn", "toy-fmnist-d16"])
    assert r.exit_code == 1 and "models/backbones/toy-fmnist.pt" in r.output
    checkout, repro = "dvc checkout --force models/backbones/toy-fmnist.pt", "dvc repro pretrain@toy-fmnist"
    assert checkout in r.output and r.output.index(checkout) < r.output.index(repro)  # restore first
    assert not (project / "models/attention").exists()


def test_analysis_stage_refuses_a_model_trained_for_another_run(project):
    for args in (["pretrain", "toy-fmnist"], ["train-attn", "toy-fmnist-d4"]):
        assert runner.invoke(app, ["stage", *args]).exit_code == 0
    attn = project / "models/attention"
    (attn / "toy-fmnist-d16").mkdir()
    for seed in (0, 1):  # d = 4 under d16's names
        (attn / f"toy-fmnist-d16/seed-{seed}.pt").write_bytes((attn / "toy-fmnist-d4/seed-0.pt").read_bytes())
    for stage in ("noise", "maps", "embed", "lesions"):
        r = runner.invoke(app, ["stage", stage, "toy-fmnist-d16"])
        assert r.exit_code == 1, (stage, r.output)
        assert "models/attention/toy-fmnist-d16/seed-0.pt" in r.output and "attn_dim 4" in r.output
        assert "attention.toy-fmnist-d16.attn_dim is 16" in r.output and "Traceback" not in r.output
    assert not (project / "results/noise").exists() and not (project / "results/lesions").exists()


class Hostile:
    def __reduce__(self):
        return (os.system, (f"touch {Hostile.marker}",))


def test_pickle_carrying_code_is_refused(project):
    Hostile.marker = project / "pwned"
    ckpt = project / "models/backbones/toy-fmnist.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"format": "gattanet", "payload": Hostile()}, ckpt)
    r = runner.invoke(app, ["stage", "train-attn", "toy-fmnist-d16"])
    assert r.exit_code == 1 and "toy-fmnist.pt" in r.output
    assert not Hostile.marker.exists()


# ---------------------------------------------------------------- 5. numerical faults

def test_nan_loss_stops_with_epoch_and_step_and_writes_no_checkpoint(project):
    r = runner.invoke(app, ["stage", "pretrain", "toy-fmnist", "-S", "backbones.toy-fmnist.lr=1.0e+30"])
    assert r.exit_code == 1 and "non-finite loss at epoch 1, step" in r.output
    assert not (project / "models/backbones/toy-fmnist.pt").exists()
    assert not (project / "results/pretrain").exists()


# ---------------------------------------------------------------- 7. concurrency

@pytest.mark.slow
def test_second_repro_is_refused_by_dvcs_lock(tmp_path):
    repo = make_project(tmp_path, tiny(epochs=50, patience=50, train_subset=400))
    sh(["dvc", "repro", "data@fashion-mnist"], repo)
    proc = subprocess.Popen(["dvc", "repro", "pretrain@toy-fmnist"], cwd=repo, env=project_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        resume = repo / ".gattanet/resume/pretrain-toy-fmnist.pt"
        deadline = time.time() + 300
        while not resume.exists() and time.time() < deadline:
            time.sleep(0.2)
        snapshot = {p: p.stat().st_mtime_ns for p in repo.rglob("*") if ".gattanet" not in p.parts and p.is_file()}
        r = sh(["dvc", "repro"], repo, check=False)
        assert r.returncode != 0 and "lock" in (r.stdout + r.stderr).lower()
        after = {p: p.stat().st_mtime_ns for p in snapshot if p.exists()}
        running = repo / "results/pretrain/toy-fmnist/live"  # the first repro's own curves, epoch by epoch
        changed = [p for p in snapshot if after.get(p) != snapshot[p] and ".dvc/tmp" not in str(p)
                   and not p.is_relative_to(running)]
        assert not changed, changed
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# ---------------------------------------------------------------- issue 40: inputs that lose work or lie


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    """A project with its data, backbone and toy-fmnist-d16's two models made once for this module's probes."""
    where = tmp_path_factory.mktemp("trained")
    params = tiny()
    params["data"]["fashion-mnist"]["root"] = str(write_fashion_mnist(where / "fm", 200, 100))
    repo = where / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        for args in (["data", "fashion-mnist"], ["pretrain", "toy-fmnist"], ["train-attn", "toy-fmnist-d16"]):
            r = runner.invoke(app, ["stage", *args])
            assert r.exit_code == 0, r.output
    return repo


@pytest.fixture
def trained(trained_once, tmp_path, monkeypatch):
    """A fresh copy of trained_once, the working directory."""
    import shutil

    repo = shutil.copytree(trained_once, tmp_path / "repo", symlinks=True)
    monkeypatch.chdir(repo)
    return repo


def refused(r, *says, code: int = 1) -> str:
    """Exit `code`, one line, no traceback, every piece of `says` in it."""
    out = r.output.strip()
    assert r.exit_code == code and "\n" not in out and "Traceback" not in out, r.output
    assert all(s in out for s in says), out
    return out


def rewrite_data(repo, change) -> None:
    """data/fashion-mnist.pt rewritten, self-consistent, with change(TensorData) -> TensorData on both splits."""
    from gattanet.data.datasets import load_tensors, save_tensors

    path = repo / "data/fashion-mnist.pt"
    splits = load_tensors(path)
    save_tensors(path, {s: change(splits[s]) for s in ("train", "test")}, "fashion-mnist")


def test_data_of_the_wrong_image_size_is_refused_by_name(trained):
    """Issue 40.8: 28×28 images reached the backbone and died in a matmul."""
    from gattanet.data.datasets import TensorData

    rewrite_data(trained, lambda d: TensorData(d.images[:, :, 2:30, 2:30].contiguous(), d.labels, d.mean, d.std,
                                               d.classes))
    before = hashes(trained)
    refused(runner.invoke(app, ["stage", "noise", "toy-fmnist-d16"]), "data/fashion-mnist.pt", "1×28×28", "1×32×32",
            "dvc repro data@fashion-mnist")
    assert hashes(trained) == before


def test_data_with_more_classes_than_the_dataset_is_refused_by_name(trained):
    """Issue 40.8: labels past the backbone's 10 classes gave baseline accuracy 0.0 and rc 0."""
    from gattanet.data.datasets import TensorData

    rewrite_data(trained, lambda d: TensorData(d.images, d.labels + 10 * (d.labels % 2), d.mean, d.std,
                                               tuple(d.classes) + tuple(f"extra-{i}" for i in range(10))))
    before = hashes(trained)
    refused(runner.invoke(app, ["stage", "noise", "toy-fmnist-d16"]), "data/fashion-mnist.pt", "20 classes",
            "fashion-mnist has 10")
    assert hashes(trained) == before


def test_a_backbone_whose_classes_do_not_match_the_data_is_refused_before_anything_is_overwritten(trained):
    """Issue 40.9: a 20-class backbone on 10-class data trained attention (rc 0) over the run's checkpoints."""
    from gattanet.engine.checkpoint import save_backbone
    from gattanet.models.registry import build_backbone

    save_backbone(trained / "models/backbones/toy-fmnist.pt", build_backbone("toy", 20, 1, input_size=32),
                  "fashion-mnist", [f"c{i}" for i in range(20)])
    before = hashes(trained)
    refused(runner.invoke(app, ["stage", "train-attn", "toy-fmnist-d16"]), "models/backbones/toy-fmnist.pt",
            "20 classes", "data/fashion-mnist.pt has 10")
    assert hashes(trained) == before


def poisoned(path, value=float("nan")) -> str:
    """Write `value` into the first floating tensor of checkpoint `path` (header intact); returns its name."""
    payload = torch.load(path, weights_only=True)
    name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][name] = torch.full_like(payload["state_dict"][name], value)
    torch.save(payload, path)
    return name


@pytest.mark.parametrize("stage", ["noise", "maps", "embed", "lesions"])
def test_an_attention_checkpoint_with_non_finite_weights_is_refused_by_name(trained, stage):
    """Issue 40.10: NaN weights gave noise and maps rc 0 (a constant 7 %, results overwritten), embed a traceback."""
    path = "models/attention/toy-fmnist-d16/seed-1.pt"
    name = poisoned(trained / path)
    before = hashes(trained)
    refused(runner.invoke(app, ["stage", stage, "toy-fmnist-d16"]), path, f"non-finite weights in {name!r}")
    assert hashes(trained) == before


def test_a_backbone_with_non_finite_weights_is_refused_by_name(trained):
    path = "models/backbones/toy-fmnist.pt"
    name = poisoned(trained / path, float("inf"))
    before = hashes(trained)
    refused(runner.invoke(app, ["stage", "train-attn", "toy-fmnist-d16"]), path, f"non-finite weights in {name!r}")
    assert hashes(trained) == before


def test_a_folder_output_that_is_a_symlink_is_replaced_not_written_through(trained):
    """Issue 40.11: the emptying skipped the link, the checkpoints went through it into another folder, and a
    stale seed-7.pt stayed in the output."""
    import shutil

    out, theirs = trained / "models/attention/toy-fmnist-d16", trained.parent / "theirs"
    shutil.move(out, theirs)
    (theirs / "seed-7.pt").write_bytes(b"stale")
    (theirs / "notes.txt").write_text("not the pipeline's")
    out.symlink_to(theirs, target_is_directory=True)
    mine = {p.name: p.read_bytes() for p in theirs.iterdir()}
    r = runner.invoke(app, ["stage", "train-attn", "toy-fmnist-d16"])
    assert r.exit_code == 0, r.output
    assert not out.is_symlink() and sorted(p.name for p in out.iterdir()) == ["seed-0.pt", "seed-1.pt"]
    assert {p.name: p.read_bytes() for p in theirs.iterdir()} == mine


def spoil_optimizer(saved):
    del saved["optimizer"]


def spoil_shape(saved):
    k = next(k for k, v in saved["model"].items() if v.is_floating_point() and v.dim() >= 1)
    saved["model"][k] = torch.zeros(3, 1, 7)


def spoil_finite(saved):
    for part in ("model", "best_state"):
        saved[part] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                       for k, v in saved[part].items()}


@pytest.mark.parametrize("spoil", [spoil_optimizer, spoil_shape, spoil_finite])
def test_a_resume_file_with_a_good_header_and_bad_content_is_discarded_with_a_warning(trained, monkeypatch, caplog,
                                                                                       spoil):
    """Issue 40.12: KeyError, a traceback or 'non-finite loss' on every rerun, the file never named, the run's
    checkpoints already deleted."""
    import pipeline.runs as runs
    from gattanet.engine.train import fit

    kill = {"on": True}

    def killable_fit(model, params, train, *args, **kw):
        return fit(model, params, KillAt(train, at=2, sleep=0) if kill["on"] else train, *args, **kw)

    monkeypatch.setattr(runs, "fit", killable_fit)
    stage = ["stage", "train-attn", "toy-fmnist-d16", "-S", "attention.toy-fmnist-d16.epochs=2",
             "-S", "attention.toy-fmnist-d16.patience=2"]
    old = (trained / "models/attention/toy-fmnist-d16/seed-0.pt").read_bytes()
    assert isinstance(runner.invoke(app, stage).exception, Killed)
    assert (trained / "models/attention/toy-fmnist-d16/seed-0.pt").read_bytes() == old  # kept until the write
    resume = trained / ".gattanet/resume/train-attn-toy-fmnist-d16-seed0.pt"
    saved = torch.load(resume, weights_only=True)
    spoil(saved)
    torch.save(saved, resume)
    kill["on"] = False
    with caplog.at_level(logging.WARNING, logger="gattanet.engine.train"):
        r = runner.invoke(app, stage)
    assert r.exit_code == 0, r.output
    assert f"resume file {resume.relative_to(trained)} cannot be used" in caplog.text, caplog.text
    assert "starting fresh" in caplog.text and not resume.exists()


def test_an_estimate_without_spread_is_written_as_json_every_reader_accepts(trained):
    """Issue 40 (JSON): `"df": Infinity` is not JSON. An interval with no spread at all writes df as
    gattanet.analysis.stats.DF_NO_SPREAD, a large finite number with the same quantiles."""
    import numpy as np

    from gattanet.analysis.stats import DF_NO_SPREAD, effect_ci
    from pipeline.report.claims import estimate

    est = effect_ci([(1.0, np.zeros((2, 50)))])
    text = json.dumps(est.as_dict(), allow_nan=False)
    back = estimate(json.loads(text))
    assert back.df == DF_NO_SPREAD and (back.low, back.high, back.detectable_80) == (0.0, 0.0, 0.0)

    def strict(constant):
        raise ValueError(f"{constant} is not JSON")

    assert runner.invoke(app, ["stage", "noise", "toy-fmnist-d16"]).exit_code == 0
    for path in [*trained.glob("results/**/*.json")]:
        json.loads(path.read_text(), parse_constant=strict)


def test_a_full_disk_keeps_the_old_results_and_says_so_in_one_line(trained, monkeypatch):
    """Issue 40: where a write fails for want of room (or rights), the old file stays and the message names it."""
    import errno

    assert runner.invoke(app, ["stage", "noise", "toy-fmnist-d16"]).exit_code == 0
    before = hashes(trained)

    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    refused(runner.invoke(app, ["stage", "noise", "toy-fmnist-d16"]), "results/noise/toy-fmnist-d16/",
            "No space left on device")
    monkeypatch.undo()
    assert hashes(trained) == before
