"""Shared fixtures (helpers without fixtures live in tests/helpers.py): data files, params, tiny-profile runs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from pipeline.profiles import compose
from tests import tiny_run as tiny_run_build
from tests.helpers import ROOT, project_env, write_fashion_mnist


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one torch thread avoids oversubscribing a shared CPU; restored after the module.
    A module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fmnist_root(tmp_path) -> Path:
    return write_fashion_mnist(tmp_path / "fashion-mnist")


@pytest.fixture
def tiny_params() -> dict:
    return compose("tiny")


def _needs_tiny_run(item) -> bool:
    return "tiny_run" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(session, config, items):
    """The files whose tests use the trained tiny run go in the middle of the order (each file's tests still
    together, for `--dist loadfile`): the build overlaps the files before them, and the files after them fill
    the test processes' last minutes, which would otherwise end on the slowest end-to-end files."""
    files: dict = {}
    for item in items:
        files.setdefault(item.path, []).append(item)
    users = [f for f, its in files.items() if any(_needs_tiny_run(i) for i in its)]
    others = [f for f in files if f not in users]
    half, count, split = sum(len(files[f]) for f in others) / 2, 0, len(others)
    for n, f in enumerate(others):
        count += len(files[f])
        if count >= half:
            split = n + 1
            break
    items[:] = [i for f in others[:split] + users + others[split:] for i in files[f]]


def _tiny_run_folder(tmp_path_factory) -> Path:
    """Where the one build of a pytest run lies: the run's temp root, shared by its xdist test processes."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "tiny-run-built"


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


_BUILDERS: list = []  # the build this test process started, if any: it polls (and so reaps) it


@pytest.fixture(scope="session", autouse=True)
def _start_tiny_run(request, tmp_path_factory):
    """If a selected test needs the trained tiny run, start its one build (tests/tiny_run.py) in a process of
    its own now, under a lock so that the run's first test process to get here starts it and the others find it."""
    if not any(_needs_tiny_run(i) for i in request.session.items):
        return
    folder = _tiny_run_folder(tmp_path_factory)
    with FileLock(str(folder) + ".lock"):
        if not folder.exists():
            folder.mkdir()
            with open(folder / tiny_run_build.LOG, "w") as log:  # the build writes it; this process needs no handle
                proc = subprocess.Popen([sys.executable, "-m", "tests.tiny_run", str(folder)], cwd=ROOT,
                                        env=project_env(), stdout=log, stderr=subprocess.STDOUT)
            (folder / "pid").write_text(str(proc.pid))
            _BUILDERS.append(proc)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, _start_tiny_run) -> dict:
    """The tiny-profile `dvc repro`, committed as the README tells a user (dvc.lock, params and the `cache: false`
    outputs in git) and pushed to a folder remote (the DVC-cached data, models and per-image results), built once
    per pytest run (tests/tiny_run.py) and copied for each test process. Tests that change the workspace leave
    HEAD as they were and never push, so a `git clone` + `dvc pull` is this run."""
    folder = _tiny_run_folder(tmp_path_factory)
    pid = int((folder / "pid").read_text())
    mine = next((p for p in _BUILDERS if p.pid == pid), None)
    alive = (lambda: mine.poll() is None) if mine else (lambda: _running(pid))
    facts = tiny_run_build.wait_built(folder, alive=alive)
    return tiny_run_build.copy_built(facts, tmp_path_factory.mktemp("tiny-run"))


@pytest.fixture
def project(tmp_path, monkeypatch, tiny_params) -> Path:
    """A working directory (the cwd) with the tiny params and small data, the data stage done."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    tiny_params["data"]["fashion-mnist"]["root"] = str(write_fashion_mnist(tmp_path / "fm", 200, 100))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, ["stage", "data", "fashion-mnist"]).exit_code == 0
    return tmp_path
