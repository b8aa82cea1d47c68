"""A hostile user's battery: bad params through every way a stage starts, kills at each write, orphaned
workers, stale temp folders, corrupt inputs. Each case once failed (issue 24) and must keep failing cleanly."""

import hashlib
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import yaml
from typer.testing import CliRunner

from gattanet.io import atomic_path
from pipeline.cli import app
from pipeline.stages.validate import cpu_cores
from tests.helpers import ROOT, project_env, sh

runner = CliRunner()


def tiny() -> dict:
    return yaml.safe_load((ROOT / "pipeline" / "profiles" / "tiny.yaml").read_text())


def hashes(root) -> dict[str, str]:
    """sha256 of every file under the project's output folders (DVC's own folders left out)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for top in ("data", "models", "results", "reports") for p in sorted((root / top).rglob("*"))
            if p.is_file()}


# ---------------------------------------------------------------- bad params, bounded values


BAD = {  # dotted key -> a value that once passed validation or failed late
    "nproc": 4096,                                   # 4096 gloo workers on this machine's cores
    "seed": 1180591620717411303424,                  # overflowed torch's seed mid-stage
    "attention.toy-fmnist-d16.seeds": [0, 2 ** 70],  # wrote seed-2**70.pt, then dims died
    "attention.toy-fmnist-d16.attn_dim": 0,
    "report.titel": "typo",
    "report.title": 3,
    "report.figures.fig9": "toy-fmnist-d16",
}


@pytest.mark.parametrize("dotted", list(BAD))
def test_bad_param_is_refused_by_every_stage_before_it_writes(project, dotted):
    """`gattanet-cli stage` (what `dvc repro -s` runs) checks the whole file, the machine too, first."""
    before = hashes(project)
    value = yaml.safe_dump(BAD[dotted], default_flow_style=True).strip().removesuffix("...").strip()
    r = runner.invoke(app, ["stage", "train-attn", "toy-fmnist-d16", "-S", f"{dotted}={value}"])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: bad params: ") and dotted.split(".")[0] in r.output
    assert "Traceback" not in r.output and hashes(project) == before


def test_nproc_on_the_cpu_names_the_cores_there_are(project):
    r = runner.invoke(app, ["stage", "validate", "-S", f"nproc={cpu_cores() + 1}", "-S", "device=cpu"])
    assert r.exit_code == 2
    assert f"need {cpu_cores() + 1} cores, but this machine has {cpu_cores()}; allowed: 1 to {cpu_cores()}" in r.output


@pytest.mark.parametrize("key", ["../../../tmp/x", ".hidden", "a/b", "a b", "x" * 65, "d16:x"])
def test_entry_keys_must_be_safe_file_names(project, tmp_path, key):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["attention"][key] = params["attention"]["toy-fmnist-d16"]
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    r = runner.invoke(app, ["stage", "validate"])
    assert r.exit_code == 2 and f"attention: entry name {key!r} is not allowed" in r.output


def test_seeds_at_the_end_of_the_range_are_refused_and_below_it_accepted(project):
    from pipeline.config import SEED_END, load_params

    assert load_params("params.yaml", [f"seed={SEED_END - 1}"]).seed == SEED_END - 1
    r = runner.invoke(app, ["stage", "validate", "-S", f"seed={SEED_END}"])
    assert r.exit_code == 2 and f"seed: must be < {SEED_END}" in r.output


# ---------------------------------------------------------------- stale temp folders


def test_a_stale_temp_folder_beside_an_output_goes_with_the_next_write(tmp_path):
    """A kill between a checkpoint's write and its rename leaves `.NAME.XXXX.tmp/`; the next write of NAME
    removes it (and leaves a live writer's folder alone)."""
    target = tmp_path / "seed-0.pt"
    stale = tmp_path / ".seed-0.pt.abcd1234.tmp"
    stale.mkdir()
    (stale / "seed-0.pt").write_bytes(b"half a checkpoint")
    other = tmp_path / ".seed-1.pt.abcd1234.tmp"  # another output's: not this write's business
    other.mkdir()
    with atomic_path(target) as tmp:
        live = tmp.parent
        with atomic_path(target) as tmp2:  # a second writer of the same file while the first is live
            tmp2.write_text("second")
        assert live.exists(), "a live writer's temp folder was removed"
        tmp.write_text("first")
    assert target.read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".seed-1.pt.abcd1234.tmp", "seed-0.pt"]


# ---------------------------------------------------------------- orphaned workers


@pytest.mark.slow
@pytest.mark.skipif(cpu_cores() < 2, reason="two gloo workers need two cores")
def test_killing_the_launcher_takes_its_torchrun_workers_with_it(project):
    """`kill -9` of the stage DVC started (the launcher) must not leave torchrun and its workers running
    to overwrite outputs after DVC has moved on."""
    assert runner.invoke(app, ["stage", "pretrain", "toy-fmnist"]).exit_code == 0
    resume = project / ".gattanet/resume/train-attn-toy-fmnist-d16-seed0.pt"
    long = ["-S", "attention.toy-fmnist-d16.epochs=200", "-S", "attention.toy-fmnist-d16.patience=200"]
    launcher = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "stage", "train-attn", "toy-fmnist-d16",
                                 "-S", "nproc=2", *long], cwd=project, env=project_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.time() + 240
        while not resume.exists() and launcher.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert launcher.poll() is None and resume.exists(), "training did not start, or ended before the kill"
        workers = psutil.Process(launcher.pid).children(recursive=True)
        assert len(workers) >= 3, workers  # torchrun and its two ranks
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"outlived the launcher: {[p.cmdline() for p in alive]}"
        before = hashes(project) | {"resume": hashlib.sha256(resume.read_bytes()).hexdigest()}
        time.sleep(3)
        assert hashes(project) | {"resume": hashlib.sha256(resume.read_bytes()).hexdigest()} == before
        assert not (project / "results/train-attn/toy-fmnist-d16/metrics.json").exists()
    finally:
        for p in [launcher, *workers]:
            try:
                p.kill()
            except (ProcessLookupError, psutil.NoSuchProcess):
                pass


# ---------------------------------------------------------------- bad params under `dvc repro -s`


def test_every_dvc_output_persists_and_the_runner_empties_the_folder_ones():
    """DVC removes a stage's outputs before its command (where a bad param is found) unless they persist;
    a folder output is then emptied by the runner once the params have passed (see clear_folder_outputs)."""
    from pipeline.stages import FOLDER_OUTPUTS

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    folders = {}
    for name, stage in stages.items():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get("do", stage).get(kind, []):
                (path, opts), = out.items() if isinstance(out, dict) else ((out, {}),)
                assert opts.get("persist") is True, f"{name}: {path} is removed by DVC before the params are checked"
                if not os.path.splitext(path)[1] and "/live/" not in path:  # DVCLive rewrites its own folder
                    folders[name] = path.replace("${key}", "{key}")
    assert folders == FOLDER_OUTPUTS


@pytest.mark.slow
def test_dvc_repro_single_stage_with_a_bad_param_removes_nothing(tiny_run):
    """`dvc repro -s` skips the validate stage: the stage's own check fails, and its outputs persist."""
    repo = tiny_run["repo"]
    before, text = hashes(repo), (repo / "params.yaml").read_text()
    assert "results/pretrain/toy-fmnist/metrics.json" in before
    params = yaml.safe_load(text)
    params["backbones"]["toy-fmnist"]["epochs"] = 0
    try:
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        r = sh(["dvc", "repro", "-s", "pretrain@toy-fmnist"], repo, check=False)
        assert r.returncode != 0 and "backbones.toy-fmnist.epochs: must be ≥ 1" in r.stdout + r.stderr
        assert hashes(repo) == before
    finally:
        (repo / "params.yaml").write_text(text)
    assert sh(["dvc", "status"], repo).stdout.strip() in ("", "Data and pipelines are up to date.")


# ---------------------------------------------------------------- corrupt inputs


@pytest.mark.parametrize("content", [b"garbage", b"\x80\x04 half a pickle"])
def test_a_corrupt_data_file_names_its_key_and_the_safe_remedies(project, content):
    data = project / "data/fashion-mnist.pt"
    data.write_bytes(content)
    r = runner.invoke(app, ["stage", "pretrain", "toy-fmnist"])
    assert r.exit_code == 1 and "data/fashion-mnist.pt: corrupt" in r.output
    checkout, repro = "dvc checkout --force data/fashion-mnist.pt", "dvc repro data@fashion-mnist"
    assert checkout in r.output and repro in r.output and r.output.index(checkout) < r.output.index(repro)
    assert "weights_only" not in r.output and "Traceback" not in r.output
    assert not (project / "models").exists()
