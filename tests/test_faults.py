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
from tests.helpers import ROOT, make_project, project_env, sh, write_fashion_mnist

runner = CliRunner()


def tiny(**backbone) -> dict:
    params = yaml.safe_load((ROOT / "pipeline" / "profiles" / "tiny.yaml").read_text())
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
