"""The pipeline's stages, one module each with `run(params[, key])`, listed in `registry.STAGES`; `run_stage` is
what `gattanet-cli stage NAME [KEY]` (and so `dvc repro`) calls."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pipeline.stages.registry import STAGES, Stage, stage_entries

__all__ = ["STAGES", "Stage", "check_key", "clear_folder_outputs", "run_stage", "stage_entries"]


def clear_folder_outputs(name: str, key: str | None) -> None:
    """Empty stage `name`'s folder output, called by the stage once its inputs have passed and it is about to
    write (a refused key, plan, data file or checkpoint leaves the last run's files as they were). dvc.yaml
    marks every output `persist: true`, so DVC no longer removes them before the command; each file output
    is replaced atomically by the stage, and a folder is emptied here, so that no file of an earlier run (a
    seed since dropped) stays in it. A folder output that is a symlink is removed as a link (never emptied
    through it: the folder it points to is someone else's) and the stage writes a real folder in its place."""
    import shutil

    for pattern in STAGES[name].folders:
        folder = Path(pattern.format(key=key))
        if folder.is_symlink() or folder.is_file():
            folder.unlink()
        elif folder.exists():
            shutil.rmtree(folder)


def check_key(params, name: str, key: str | None) -> None:
    """KEY must be one of the stage's entries in params, checked before the stage touches anything: a KEY
    names files and folders (models/attention/KEY), so a path ('..', 'a/b') must never reach them."""
    from pipeline.config import SAFE_KEY, shown
    from pipeline.errors import UsageError

    entries = stage_entries(params, name)
    if entries is None or key in entries:
        return
    why = "" if isinstance(key, str) and SAFE_KEY.fullmatch(key) else " (a KEY is an entry name, not a path)"
    raise UsageError(f"{name}: no entry {shown(key)} in params{why}; entries: {', '.join(entries) or '(none)'}")


def run_stage(name: str, key: str | None, params_path: Path, overrides: list[str] | None) -> None:
    """Load and validate the params, then run stage `name` (on entry `key` when it takes one). A training
    stage with `nproc` > 1 relaunches itself under torchrun (one process per GPU, or gloo processes on
    the CPU); a process torchrun started joins the process group first, and dies with its parent."""
    from gattanet.engine import distributed
    from pipeline.config import load_params
    from pipeline.runtime import resolve_device
    from pipeline.stages.validate import check_machine

    params = load_params(params_path, overrides)
    check_machine(params)  # `dvc repro -s` and `gattanet-cli stage` skip the validate stage
    check_key(params, name, key)
    if distributed.launched():
        die_with_parent()
    else:
        if params.nproc > 1 and STAGES[name].trains(params, key):
            return relaunch(params.nproc, name, key, params_path, overrides)
    world = distributed.init(resolve_device(params.device)) if distributed.launched() else distributed.SINGLE
    logging.basicConfig(level=logging.INFO if world.is_main else logging.WARNING,
                        format="%(name)s: %(message)s" if world.size == 1 else f"[rank {world.rank}] %(name)s: %(message)s")
    try:
        STAGES[name].run(params, key)
    finally:
        distributed.leave()


def relaunch(nproc: int, name: str, key: str | None, params_path: Path, overrides: list[str] | None) -> None:
    """Run this stage again as `torchrun --standalone --nproc-per-node NPROC gattanet-cli stage ...` (one
    node; see the README for several) and fail as it fails."""
    import subprocess
    import sys

    from pipeline.errors import StageFailed

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "pipeline.cli", "stage", name, *([key] if key is not None else []), "--params", str(params_path)]
    for item in overrides or []:
        cmd += ["--set", item]
    print(f"{name}: {nproc} processes under torchrun (DDP)", flush=True)
    launcher = os.getpid()
    code = subprocess.call(cmd, preexec_fn=lambda: die_with_parent(launcher))
    if code != 0:
        raise StageFailed(f"{name}: torchrun exited with {code} (the ranks' messages are above)", code)


def die_with_parent(parent: int | None = None) -> None:
    """Have the kernel kill this process when its parent dies (Linux's PR_SET_PDEATHSIG), so that killing
    the stage DVC started (`kill -9` included) takes torchrun and its workers with it, rather than leaving
    orphans that overwrite outputs later. Exits at once if the parent (pid `parent`, or any but init) is
    already gone. Elsewhere a no-op. Safe between fork and exec: it only calls prctl and getppid."""
    if _PRCTL is None:
        return
    _PRCTL(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    if (os.getppid() != parent) if parent is not None else (os.getppid() == 1):
        os._exit(1)


def _prctl():
    import ctypes
    import sys

    return ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


_PRCTL = _prctl()  # looked up before any fork: a forked child must not load libraries
