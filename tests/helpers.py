"""Test helpers (no fixtures): small Fashion-MNIST IDX files in the real on-disk format, params edits,
and fresh git + DVC copies of the project for the end-to-end tests. Tests import them from here."""

import gzip
import hashlib
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzip IDX file (magic 0x0000 08 ndim, big-endian dims)."""
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(root: Path, n_train: int = 300, n_test: int = 100, seed: int = 0) -> Path:
    """Fashion-MNIST-format files whose classes are learnable: class c lights up band c of the image."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 + 2 * c: 5 + 2 * c, 4:24] += 180
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def with_param(params: dict, dotted: str, value) -> dict:
    """A copy of a params dict with `a.b.c` set to `value` (value KeyError: the key removed)."""
    import copy

    params = copy.deepcopy(params)
    *path, last = dotted.split(".")
    node = params
    for k in path:
        node = node[k]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return params


PROJECT_FILES = ["gattanet", "pipeline", "dvc.yaml", "pyproject.toml", ".gitignore", "analysis_plan.yaml"]


def sh(cmd: list[str], cwd: Path, timeout: int = 900, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command with the venv's tools on PATH; on failure show its output."""
    r = subprocess.run(cmd, cwd=cwd, env=project_env(), capture_output=True, text=True, timeout=timeout, **kw)
    if check:
        assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def project_env() -> dict:
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")


def make_project(where: Path, params: dict, n_train: int = 400, n_test: int = 200) -> Path:
    """A fresh git + DVC copy of the project under `where`, with `params` and small Fashion-MNIST files."""
    repo = where / "repo"
    repo.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, repo / name)
    params["data"]["fashion-mnist"]["root"] = str(write_fashion_mnist(where / "fmnist", n_train, n_test))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "init", "-q"], repo)
    sh(["dvc", "init", "-q"], repo)
    sh(["dvc", "config", "core.analytics", "false"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "project"], repo)
    return repo


OUTPUT_TOPS = ("data", "models", "results", "reports")  # where a project's stage outputs live


def copy_of(repo: Path, where: Path) -> Path:
    """A copy of a trained project (git, DVC cache and workspace), to break without touching the original."""
    shutil.copytree(repo, where, symlinks=True)
    return where


def cached_files(repo: Path) -> dict[str, str]:
    """Every file of a DVC-cached output of a tiny-profile run (what `dvc push` sends): path -> sha256."""
    files = sorted(p for top in ("data", "models") for p in (repo / top).rglob("*")
                   if p.is_file() and p.name != ".gitignore")
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def scrambled(obj):
    """A stage output with every interval replaced by a wrong one (a loss surely below zero): what the report
    must ignore where it recomputes the interval from the per-image arrays."""
    if isinstance(obj, dict) and {"mean", "low", "high", "seed_means"} <= set(obj):
        return {**obj, "mean": -0.5, "low": -0.6, "high": -0.4}
    if isinstance(obj, dict):
        return {k: scrambled(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrambled(v) for v in obj]
    return obj
