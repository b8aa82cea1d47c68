"""Test-only: `kill -9` a stage process at its k-th write, from outside the library (see tests/killed.py,
which puts this folder on PYTHONPATH and sets the variables). Stdlib only, so a stage run under it imports
the same project modules, and so gets the same code digest for its resume files, as one run without it."""

import os
import sys

_STAGE = os.environ.get("GATTANET_TEST_KILL_STAGE", "").split()
if _STAGE and sys.argv[1:1 + len(_STAGE) + 1] == ["stage", *_STAGE]:
    import builtins
    import functools
    import io
    import json
    import shutil
    import signal

    _AT = int(os.environ["GATTANET_TEST_KILL_AT"])  # 0: never (record the writes only)
    _TRACE = os.environ["GATTANET_TEST_KILL_TRACE"]
    _ROOT = os.getcwd()
    _TOPS = {"data", "models", "results", "reports", ".gattanet"}
    _state = {"n": 0, "inside": False}

    def _written(path) -> str | None:
        """`path` relative to the project when a stage output (or resume file) lies there, outside a temp
        folder (atomic_path's `.NAME.XXXXXXXX.tmp/`, write_curves' `live.tmp/`); else None."""
        if isinstance(path, int):
            return None
        rel = os.path.relpath(os.path.abspath(os.fsdecode(path)), _ROOT)
        parts = rel.split(os.sep)
        if parts[0] not in _TOPS or any(p.endswith(".tmp") for p in parts):
            return None
        return rel

    def _point(kind: str, path) -> None:
        """One write about to happen: record it; die here (before it) if it is the k-th."""
        rel = None if _state["inside"] else _written(path)
        if rel is None:
            return
        _state["n"] += 1
        with _open(_TRACE, "a") as f:
            f.write(json.dumps({"n": _state["n"], "kind": kind, "path": rel}) + "\n")
        if _state["n"] == _AT:
            os.kill(os.getpid(), signal.SIGKILL)

    def _wrap(fn, kind, arg=0, when=lambda *a, **k: True):
        @functools.wraps(fn)
        def wrapped(*args, **kw):
            if args and when(*args, **kw):
                _point(kind, args[arg])
            return fn(*args, **kw)
        return wrapped

    def _writes(file, mode="r", *args, **kw) -> bool:
        return any(c in mode for c in "wax+")

    def _rmtree(fn):
        @functools.wraps(fn)
        def wrapped(path, *args, **kw):
            _point("remove", path)
            inside, _state["inside"] = _state["inside"], True  # its own unlinks are not more writes
            try:
                return fn(path, *args, **kw)
            finally:
                _state["inside"] = inside
        return wrapped

    _open = builtins.open
    builtins.open = io.open = _wrap(builtins.open, "open", when=_writes)
    os.replace = _wrap(os.replace, "replace", arg=1)
    os.rename = _wrap(os.rename, "rename", arg=1)
    os.remove = _wrap(os.remove, "remove")
    os.unlink = _wrap(os.unlink, "remove")
    shutil.rmtree = _rmtree(shutil.rmtree)
