"""Shared fixtures (helpers without fixtures live in tests/helpers.py): data files, params, tiny-profile runs."""

from pathlib import Path

import pytest
import yaml

from pipeline.profiles import compose
from tests.helpers import cached_files, make_project, project_env, sh, write_fashion_mnist


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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> dict:
    """One tiny-profile `dvc repro` in a fresh copy of the project, shared by the end-to-end tests of one test
    process (under `make test`'s two processes, each builds its own): then
    committed as the README tells a user (dvc.lock, params and the `cache: false` outputs in git) and
    pushed to a folder remote (the DVC-cached data, models and per-image results). Tests that change the
    workspace leave HEAD and the remote as they were, so a `git clone` + `dvc pull` is this run."""
    where = tmp_path_factory.mktemp("tiny-run")
    params = compose("tiny")
    repo = make_project(where, params)
    remote = where / "remote"
    sh(["dvc", "remote", "add", "-d", "store", str(remote)], repo)  # no --local: .dvc/config travels with git
    sh(["git", "commit", "-qam", "a default remote"], repo)
    sh(["dvc", "repro"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "trained: dvc.lock and the cache: false outputs"], repo)
    sh(["dvc", "push"], repo)
    head = sh(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    return {"where": where, "repo": repo, "remote": remote, "head": head, "cached": cached_files(repo)}


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
