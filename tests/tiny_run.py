"""The trained tiny-profile project the end-to-end tests share, built once per `pytest` run.

`build(folder)` runs the tiny profile's `dvc repro` in a fresh copy of the project, commits it as the README tells a
user (dvc.lock, params and the `cache: false` outputs in git) and pushes the DVC-cached outputs to a folder remote;
it then writes `folder/built.json`, or `folder/failed.txt` with the reason. `python -m tests.tiny_run FOLDER` runs it
in its own process, which conftest starts as soon as a test process sees a selected test that needs the run, so the
build overlaps the other tests; every test process then takes its own copy of the built project (`copy_built`)."""

import json
import sys
import time
import traceback
from pathlib import Path

from pipeline.profiles import compose
from tests.helpers import cached_files, copy_of, make_project, sh

BUILT, FAILED, LOG = "built.json", "failed.txt", "build.log"


def build(folder: Path) -> dict:
    """Build the trained tiny project under `folder` (repo/, remote/, fmnist/); its facts, also in built.json."""
    try:
        repo = make_project(folder, compose("tiny"))
        remote = folder / "remote"  # read by the tests (`dvc pull`, `dvc status --cloud`), never pushed to by them
        sh(["dvc", "remote", "add", "-d", "store", str(remote)], repo)  # no --local: .dvc/config travels with git
        sh(["git", "commit", "-qam", "a default remote"], repo)
        sh(["dvc", "repro"], repo)
        sh(["git", "add", "-A"], repo)
        sh(["git", "commit", "-qm", "trained: dvc.lock and the cache: false outputs"], repo)
        sh(["dvc", "push"], repo)
        facts = {"repo": str(repo), "remote": str(remote), "head": sh(["git", "rev-parse", "HEAD"], repo).stdout.strip(),
                 "cached": cached_files(repo)}
    except BaseException:
        (folder / FAILED).write_text(traceback.format_exc())
        raise
    (folder / BUILT).write_text(json.dumps(facts))
    return facts


def wait_built(folder: Path, timeout: float = 1800, alive=lambda: True) -> dict:
    """built.json's facts once the build under `folder` has written them; its error if it failed or its process
    (`alive()`) ended without a result; an error after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ended = not alive()  # asked first: a build that had ended before its files are looked at has written them
        if (folder / BUILT).exists():
            return json.loads((folder / BUILT).read_text())
        if (folder / FAILED).exists():
            raise RuntimeError(f"the tiny-profile build under {folder} failed:\n{(folder / FAILED).read_text()[-4000:]}")
        if ended:
            log = folder / LOG
            raise RuntimeError(f"the tiny-profile build under {folder} ended without a result; its log:\n"
                               f"{log.read_text()[-4000:] if log.exists() else '(none)'}")
        time.sleep(1)
    raise TimeoutError(f"the tiny-profile build under {folder} took over {timeout:.0f} s")


def copy_built(facts: dict, where: Path) -> dict:
    """A test process's own copy of the built project (its remote shared, read only): tiny_run's dict."""
    repo = copy_of(Path(facts["repo"]), where / "repo")
    return {"where": where, "repo": repo, "remote": Path(facts["remote"]), "head": facts["head"],
            "cached": facts["cached"]}


if __name__ == "__main__":
    build(Path(sys.argv[1]))
