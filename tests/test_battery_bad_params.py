"""Issue 24's battery, bad params, on a copy of the tiny-profile run (conftest's tiny_run): a bad value through
every way a stage starts is refused, naming the key and what is allowed, and no output or dvc.lock changes."""

import hashlib
from pathlib import Path

import pytest
import yaml

from pipeline.stages.validate import cpu_cores
from tests.helpers import OUTPUT_TOPS, copy_of, sh, with_param

pytestmark = pytest.mark.slow
KEY, UNSAFE = "toy-fmnist-d16", "d16:x"  # UNSAFE: a stage name DVC takes, a file name validation refuses


def snapshot(repo: Path) -> dict[str, str]:
    """sha256 of every file of every stage output, and of dvc.lock."""
    files = [p for top in OUTPUT_TOPS for p in sorted((repo / top).rglob("*")) if p.is_file()] + [repo / "dvc.lock"]
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


ROWS = {  # name -> (dotted key, value, the stage started alone, what the refusal must say)
    "attn_dim-0": (f"attention.{KEY}.attn_dim", 0, KEY, [f"attention.{KEY}.attn_dim: must be ≥ 1, got 0"]),
    "unknown-key": (f"attention.{KEY}.atn_dim", 16, KEY, [f"attention.{KEY}.atn_dim: unknown key; allowed: "]),
    "seed-2**32": ("seed", 2 ** 32, KEY, [f"seed: must be < {2 ** 32}", f"got {2 ** 32}"]),
    "nproc-above-cores": ("nproc", cpu_cores() + 1, KEY,
                          [f"nproc: {cpu_cores() + 1} processes on the CPU need {cpu_cores() + 1} cores, "
                           f"but this machine has {cpu_cores()}; allowed: 1 to {cpu_cores()}"]),
    "unsafe-entry-name": (f"attention.{UNSAFE}", None, UNSAFE, [f"attention: entry name {UNSAFE!r} is not allowed"]),
}
ENTRY_POINTS = {  # name -> (command, given the stage; whether the bad value goes in by DVC's -S, not an edit)
    "dvc-repro": (lambda stage: ["dvc", "repro"], False),
    "dvc-repro-s": (lambda stage: ["dvc", "repro", "-s", stage], False),
    "dvc-exp-run": (lambda stage: ["dvc", "exp", "run"], True),
    "dvc-exp-run-s": (lambda stage: ["dvc", "exp", "run", "-s", stage], True),
    "gattanet-cli-stage": (lambda stage: ["gattanet-cli", "stage", *stage.split("@")], False),
}


@pytest.fixture(scope="module")
def battery(tiny_run, tmp_path_factory):
    """A copy of the tiny run for the bad-params matrix; afterwards DVC must find it as it was."""
    repo = copy_of(tiny_run["repo"], tmp_path_factory.mktemp("battery") / "repo")
    yield repo
    assert sh(["dvc", "status"], repo).stdout.strip() in ("", "Data and pipelines are up to date.")


def bad_value(params: dict, dotted: str, value):
    return params["attention"][KEY] if value is None else value  # the unsafe entry: a copy of a good one


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("row", list(ROWS))
def test_bad_params_change_no_output_whichever_way_the_stage_starts(battery, row, entry):
    """Non-zero exit, the bad key and value named, every output file and dvc.lock byte-identical; under
    `dvc exp run -S`, DVC leaves its override in params.yaml (and nothing else changed) and saves no
    experiment."""
    repo, (dotted, value, stage_key, says), (command, by_dvc) = battery, ROWS[row], ENTRY_POINTS[entry]
    text = (repo / "params.yaml").read_text()
    params = yaml.safe_load(text)
    bad = with_param(params, dotted, bad_value(params, dotted, value))
    by_dvc = by_dvc and value is not None  # -S sets scalars; a whole new entry is written into the file
    cmd = command(f"train-attn@{stage_key}")
    if by_dvc:
        cmd += ["-S", f"{'+' if row == 'unknown-key' else ''}{dotted}={value}"]  # `+`: Hydra's new key
    else:
        (repo / "params.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    before, head = snapshot(repo), sh(["git", "rev-parse", "HEAD"], repo).stdout
    try:
        r = sh(cmd, repo, check=False)
        out = r.stdout + r.stderr
        assert r.returncode != 0, out
        assert all(s in out for s in says) and "Traceback" not in out, out
        assert snapshot(repo) == before
        assert yaml.safe_load((repo / "params.yaml").read_text()) == bad  # by -S: DVC's edit, left in place
        if entry.startswith("dvc-exp"):
            assert sh(["dvc", "exp", "list", "-A", "--name-only"], repo).stdout.strip() == ""
            refs = sh(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo).stdout.split()
            assert all(ref.startswith("refs/exps/exec/") for ref in refs), refs  # DVC's scratch refs only
            assert sh(["git", "rev-parse", "HEAD"], repo).stdout == head
    finally:
        (repo / "params.yaml").write_text(text)  # not `git checkout`: see the README on `dvc exp run -S`
