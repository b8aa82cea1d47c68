"""Issue 24's battery, kills, on a copy of the tiny-profile run (conftest's tiny_run): a training stage killed at
each kind of write it makes leaves no half file, and its rerun leaves no temp folder and gives the outputs an
uninterrupted run gives."""

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import OUTPUT_TOPS, copy_of, project_env, sh, with_param
from tests.killed import kill_env, read_trace, write_number

pytestmark = pytest.mark.slow
KEY = "toy-fmnist-d16"


STAGES = {  # stage -> (its `gattanet-cli stage` words, a params edit that makes DVC rerun it)
    f"train-attn@{KEY}": (f"train-attn {KEY}", {f"attention.{KEY}.epochs": 2, f"attention.{KEY}.patience": 2}),
    f"noise@{KEY}": (f"noise {KEY}", {"noise.test_subset": 150}),
}
RESUME = f".gattanet/resume/train-attn-{KEY}-seed"
KILLS = {  # name -> (stage, kind of write, its path, which such write, what the rerun logs)
    "folder-output-emptied": (f"train-attn@{KEY}", "remove", f"models/attention/{KEY}", 1, []),
    "resume-seed0-epoch1": (f"train-attn@{KEY}", "replace", f"{RESUME}0.pt", 1, []),
    "dvclive-epoch1": (f"train-attn@{KEY}", "open", f"results/train-attn/{KEY}/live/plots/metrics/seed-0/train_loss.tsv",
                       1, [f"{KEY} seed 0: resuming after epoch 1"]),
    "resume-seed1-epoch2": (f"train-attn@{KEY}", "replace", f"{RESUME}1.pt", 2,
                            [f"{KEY} seed 0: resuming after epoch 2", f"{KEY} seed 1: resuming after epoch 1"]),
    "checkpoint-seed1": (f"train-attn@{KEY}", "replace", f"models/attention/{KEY}/seed-1.pt", 1,
                         [f"{KEY} seed 1: resuming after epoch 2"]),
    "curves-rewritten": (f"train-attn@{KEY}", "rename", f"results/train-attn/{KEY}/live", 1, []),
    "metrics-json": (f"train-attn@{KEY}", "replace", f"results/train-attn/{KEY}/metrics.json", 1, []),
    "resume-files-removed": (f"train-attn@{KEY}", "remove", f"{RESUME}0.pt", 1, []),
    "per-image-arrays": (f"noise@{KEY}", "replace", f"results/noise/{KEY}/correct.npz", 1, []),
    "noise-last-write": (f"noise@{KEY}", "replace", f"results/noise/{KEY}/sweep.json", 1, []),
}
TEMP = re.compile(r".+\.tmp")  # atomic_path's `.NAME.XXXXXXXX.tmp/`, write_curves' `live.tmp/`


def without_seconds(x):
    """A JSON value without its "seconds" (wall-clock timings, which no rerun repeats)."""
    if isinstance(x, dict):
        return {k: without_seconds(v) for k, v in x.items() if k != "seconds"}
    return [without_seconds(v) for v in x] if isinstance(x, list) else x


def outputs(repo: Path) -> dict[str, str]:
    """sha256 of every stage output file, timings left out (JSON "seconds", DVCLive's seconds.tsv values)."""
    found = {}
    for p in (p for top in OUTPUT_TOPS for p in sorted((repo / top).rglob("*")) if p.is_file()):
        data = p.read_bytes()
        if p.suffix == ".json":
            data = json.dumps(without_seconds(json.loads(data)), sort_keys=True).encode()
        elif p.name == "seconds.tsv":
            data = b"\n".join(line.split(b"\t")[0] for line in data.splitlines())
        found[str(p.relative_to(repo))] = hashlib.sha256(data).hexdigest()
    return found


def locked(repo: Path, stage: str) -> dict:
    """What dvc.lock records of `stage`."""
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"][stage]


def temp_entries(repo: Path) -> list[str]:
    return [str(p.relative_to(repo)) for top in OUTPUT_TOPS for p in (repo / top).rglob("*") if TEMP.fullmatch(p.name)]


@pytest.fixture(scope="module")
def kill_base(tiny_run, tmp_path_factory):
    """The tiny run, copied: each test copies it again, edits its stage's params and runs it."""
    return copy_of(tiny_run["repo"], tmp_path_factory.mktemp("kill-base") / "repo")


def prepared(base: Path, where: Path, stage: str) -> Path:
    repo = copy_of(base, where)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for dotted, value in STAGES[stage][1].items():
        params = with_param(params, dotted, value)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return repo


def repro(repo: Path, stage: str, at: int | None = None, trace: Path | None = None) -> subprocess.CompletedProcess:
    """`dvc repro STAGE`; with `at`, its stage process killed at its write number `at` (0: only traced)."""
    env = project_env() if at is None else kill_env(project_env(), STAGES[stage][0], at, trace)
    return subprocess.run(["dvc", "repro", stage], cwd=repo, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def uninterrupted(kill_base, tmp_path_factory):
    """{stage: (its writes in order, its outputs)} of each stage run once without a kill, traced."""
    runs = {}
    for stage in STAGES:
        where = tmp_path_factory.mktemp("uninterrupted")
        repo, trace = prepared(kill_base, where / "repo", stage), where / "trace.jsonl"
        r = repro(repo, stage, at=0, trace=trace)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        runs[stage] = (read_trace(trace), outputs(repo))
    return runs


@pytest.mark.parametrize("kill", list(KILLS))
def test_a_stage_killed_at_a_write_leaves_no_half_file_and_its_rerun_matches(kill_base, uninterrupted,
                                                                            tmp_path, kill):
    """kill -9 just before one write: DVC records nothing of the stage, each output is its old or its new self (DVCLive's
    live curves aside) with at most a temp folder beside it; `dvc repro` then completes, removes every temp
    folder and resume file, and gives the outputs of the uninterrupted run; `dvc status STAGE` is clean."""
    stage, kind, path, nth, resumed = KILLS[kill]
    writes, new = uninterrupted[stage]
    at = write_number(writes, kind, path, nth)
    repo, trace = prepared(kill_base, tmp_path / "repo", stage), tmp_path / "trace.jsonl"
    old, lock = outputs(repo), locked(repo, stage)

    r = repro(repo, stage, at=at, trace=trace)
    assert r.returncode != 0 and read_trace(trace)[-1] == writes[at - 1], r.stdout[-2000:] + r.stderr[-2000:]
    assert locked(repo, stage) == lock  # (validate, which passed, has its new params recorded)
    live = f"results/{stage.split('@')[0]}/{KEY}/live/"  # a running stage's curves, epoch by epoch
    for name, digest in outputs(repo).items():
        if not name.startswith(live) and not any(TEMP.fullmatch(part) for part in Path(name).parts):
            assert digest in (old.get(name), new.get(name)), f"{name}: neither the old file nor the new one"

    r = sh(["dvc", "repro", stage], repo)
    assert all(line in r.stdout + r.stderr for line in resumed), r.stderr[-3000:]
    assert temp_entries(repo) == [] and not list((repo / ".gattanet/resume").glob("*"))
    assert outputs(repo) == new
    assert sh(["dvc", "status", stage], repo).stdout.strip() in ("", "Data and pipelines are up to date.")
