"""Trained models shared through a DVC remote, and sweeps on DVC's experiment queue (issue 15).

The trainer is conftest's `tiny_run`: one tiny-profile `dvc repro`, committed the way the README tells
a user to (dvc.lock, params.yaml and the `cache: false` outputs in git) and its DVC-cached outputs
(data, models, correct.npz) pushed to a local-folder remote. Then (1) a fresh `git clone` + `dvc pull`
has everything and `dvc repro` runs no stage, and (2) in that clone, two experiments queued with
`dvc exp run --queue -S` run on two `dvc queue start -j 2` workers in DVC's temporary workspaces and
`dvc exp show` lists each with its params and metrics.

Both need the `cache: false` outputs in git: the root .gitignore leaves results/ and reports/ to git,
and DVC writes its own .gitignore entries for the cached outputs inside results/
(results/noise/KEY/.gitignore: /correct.npz).
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, cached_files, project_env

pytestmark = pytest.mark.slow

SHARED_UNIGNORED = ("/results/", "/reports/")  # what .gitignore must not ignore: these go through git


def env() -> dict:
    return dict(project_env(), OMP_NUM_THREADS="1")


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def stage_names(repo: Path) -> list[str]:
    return list(yaml.safe_load((repo / "dvc.lock").read_text())["stages"])


def test_the_shipped_gitignore_leaves_the_cache_false_outputs_to_git():
    ignored = {line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()}
    assert not ignored & set(SHARED_UNIGNORED), "results/ and reports/ must go through git"


@pytest.fixture(scope="module")
def clone(tiny_run, tmp_path_factory) -> Path:
    """A colleague's copy: `git clone` of the trainer's commit, then `dvc pull` from the remote."""
    b = tmp_path_factory.mktemp("colleague") / "clone"
    run(["git", "clone", "-q", str(tiny_run["repo"]), str(b)], b.parent)
    run(["git", "reset", "-q", "--hard", tiny_run["head"]], b)  # the trained commit, on its branch
    assert not (b / "models").exists() and (b / "results/train-attn/toy-fmnist-d16/metrics.json").is_file()
    run(["dvc", "pull"], b)
    return b


def test_a_clone_pulls_the_trained_models_and_reruns_nothing(tiny_run, clone):
    a, b = tiny_run["repo"], clone
    tracked = set(run(["git", "ls-tree", "-r", "--name-only", tiny_run["head"]], a).stdout.split())
    assert {"dvc.lock", "results/params.ok", "reports/summary.json", "reports/index.html",
            "results/train-attn/toy-fmnist-d16/metrics.json",
            "results/noise/toy-fmnist-d16/correct.npz"} <= tracked  # the per-image arrays: verdicts recomputable from git
    assert not any(p.startswith(("data/", "models/")) for p in tracked)  # the cached outputs are the remote's

    assert "are in sync" in run(["dvc", "status", "--cloud"], b).stdout  # everything cached came from the remote
    assert cached_files(b) == tiny_run["cached"]  # the trainer's files, bit for bit
    assert any(k.startswith("models/attention/") for k in cached_files(b))
    assert run(["dvc", "status"], b).stdout.strip() == "Data and pipelines are up to date."
    out = run(["dvc", "repro"], b).stdout
    assert "Running stage" not in out, out
    assert "Data and pipelines are up to date." in out
    for stage in stage_names(b):
        assert f"Stage '{stage}' didn't change, skipping" in out, (stage, out)
    assert run(["git", "status", "--porcelain"], b).stdout == ""


def _my_processes(where: Path) -> list[int]:
    """Processes (queue workers, their experiments) whose working directory is under `where`."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if Path(os.readlink(d / "cwd")).is_relative_to(where):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


@pytest.fixture
def queue_workers(clone):
    """Stops the queue's workers at the end (they would otherwise idle for a minute), whatever happened."""
    yield
    run(["dvc", "queue", "stop", "--kill"], clone, check=False)
    deadline = time.monotonic() + 30
    while _my_processes(clone.parent) and time.monotonic() < deadline:
        time.sleep(1)
    for pid in _my_processes(clone.parent):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def test_queued_experiments_run_in_parallel_and_exp_show_lists_their_metrics(clone, queue_workers):
    repo = clone
    key, metrics = "toy-fmnist-d4", "results/train-attn/toy-fmnist-d4/metrics.json"
    # A sweep: one -S with two values queues two experiments (dim-1, dim-2), each running only the
    # training of that run (with its upstream stages, unchanged: checked out of the shared cache).
    out = run(["dvc", "exp", "run", "--queue", "-n", "dim", "-S", f"attention.{key}.attn_dim=2,8",
               f"train-attn@{key}"], repo).stdout
    assert out.count("Queued experiment") == 2, out
    t = time.monotonic()
    assert "Started '2' new experiments task queue workers" in run(["dvc", "queue", "start", "-j", "2"], repo).stdout
    head = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    deadline, asked, status = time.monotonic() + 480, time.monotonic(), ""
    while True:  # `git for-each-ref` is cheap; `dvc queue status` (2-3 s of CPU) only now and then
        refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps/"], repo).stdout.split()
        done = "refs/exps/celery/failed" in refs or sum(r.startswith(f"refs/exps/{head[:2]}/{head[2:]}/")
                                                         for r in refs) >= 2
        if done or time.monotonic() - asked > 30:
            status, asked = run(["dvc", "queue", "status"], repo).stdout, time.monotonic()
            if "Failed" in status or not any(s in status for s in ("Queued", "Running", "Preparing")):
                break
        assert time.monotonic() < deadline, status
        time.sleep(2)
    seconds = time.monotonic() - t
    logs = run(["dvc", "queue", "logs", "dim-1"], repo, check=False).stdout if "Failed" in status else ""
    assert status.count("Success") == 2, status + "\n" + logs

    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    baseline = next(row for row in shown if row["rev"] == head)
    exps = {e["name"]: e["revs"][0]["data"] for e in baseline["experiments"]}
    assert set(exps) == {"dim-1", "dim-2"}, exps

    def params(data):
        return data["params"]["params.yaml"]["data"]

    def metric(data, path):
        return data["metrics"][path]["data"]

    base = baseline["data"]
    for name, dim in (("dim-1", 2), ("dim-2", 8)):
        data = exps[name]
        assert params(data)["attention"][key]["attn_dim"] == dim
        assert metric(data, metrics)["attn_dim"] == dim  # the metric comes from the experiment's own run
        assert metric(data, metrics)["attention_params"] != metric(base, metrics)["attention_params"]
        # what the param does not touch is the baseline's, unchanged
        assert params(data)["attention"]["toy-fmnist-d16"] == params(base)["attention"]["toy-fmnist-d16"]
        for same in ("results/train-attn/toy-fmnist-d16/metrics.json", "results/pretrain/toy-fmnist/metrics.json"):
            assert metric(data, same) == metric(base, same)
    assert metric(exps["dim-1"], metrics)["attention_params"] < metric(exps["dim-2"], metrics)["attention_params"]
    assert params(base)["attention"][key]["attn_dim"] == 4  # the workspace was not touched
    assert run(["git", "status", "--porcelain"], repo).stdout == ""

    # The experiment's commit holds its metrics (git-tracked) and its dvc.lock: `dvc exp branch` makes a branch of it.
    run(["dvc", "exp", "branch", "dim-2", "d4-at-dim-8"], repo)
    on_branch = json.loads(run(["git", "show", f"d4-at-dim-8:{metrics}"], repo).stdout)
    assert on_branch["attn_dim"] == 8
    print(f"2 queued experiments on 2 workers: {seconds:.0f} s")
