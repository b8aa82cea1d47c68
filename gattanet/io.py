"""Atomic file writes: a file appears whole or not at all (temp file in the same folder + os.replace),
and torch files whose bytes depend only on what they hold (see `torch_bytes`)."""

import fcntl
import json
import os
import pickle
import re
import shutil
import tempfile
import types
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; on success it replaces `path`, on error it is removed.

    The temporary file has `path`'s own name, inside a fresh hidden folder beside `path`: a writer that
    records its file's name (torch.save names its zip archive after the file) writes the same bytes as
    it would into `path` itself, never a random temp name. It starts empty, with the usual permissions.
    The writer holds a lock on its folder; folders of earlier writers of `path` that died (killed
    before the rename) hold none, and are removed here, so they do not linger inside an output."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder, lock = _locked_folder(path)
    tmp = folder / path.name
    try:
        _remove_stale(path, folder)
        tmp.touch()  # 0666 less the umask, as any new file
        yield tmp
        os.replace(tmp, path)
    except OSError as e:  # disk full, read-only: `path` is left as it was; say so by its name, not the temp's
        if e.errno is None:
            raise
        raise type(e)(e.errno, f"{e.strerror or e}; {path.name} left as it was", str(path)) from e
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(lock)


def _locked_folder(path: Path) -> tuple[Path, int]:
    """A fresh `.NAME.XXXXXXXX.tmp` folder beside `path`, and a descriptor holding its exclusive lock."""
    while True:
        folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            lock = os.open(folder, os.O_RDONLY)
        except FileNotFoundError:  # another writer's cleanup took it before we could lock it
            continue
        fcntl.flock(lock, fcntl.LOCK_EX)
        if folder.is_dir() and os.stat(folder).st_ino == os.fstat(lock).st_ino:
            return folder, lock
        os.close(lock)  # removed while we waited for the lock: make another


def _remove_stale(path: Path, own: Path) -> None:
    """Remove the temp folders of `path` (see atomic_path) whose writers are gone: no lock on them."""
    name = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}\.tmp")
    for entry in os.scandir(path.parent):
        if not name.fullmatch(entry.name) or entry.path == str(own) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live writer
            os.close(fd)
            continue
        shutil.rmtree(entry.path, ignore_errors=True)  # under its lock, so a writer waiting for it sees it gone
        os.close(fd)


class _MemolessPickler(pickle.Pickler):
    """A pickler without a memo: an object seen twice is written twice, never as a back-reference, so the
    bytes do not depend on which equal objects happen to be one object (an interned string, a shared tuple)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fast = True


_MEMOLESS = types.ModuleType("gattanet_memoless_pickle")
_MEMOLESS.Pickler = _MemolessPickler


def torch_bytes(obj) -> bytes:
    """torch.save's bytes of `obj`, the same wherever and whenever it is written: saved to memory, so the
    zip archive is named "archive" and not after a file; without a pickle memo (see _MemolessPickler).
    torch's zip writer itself stores a fixed date (1980) and a content-derived serialization id. Tensors are
    written with their own strides and whole storages: pass contiguous tensors that own their storage
    (gattanet.engine.checkpoint does) for bytes that depend on values only. Loads with plain torch.load."""
    import torch

    buf = BytesIO()
    torch.save(obj, buf, pickle_module=_MEMOLESS)
    return buf.getvalue()


def save_torch(path, obj) -> None:
    """Write `torch_bytes(obj)` to `path` atomically (serialised first, so a failure leaves no file)."""
    data = torch_bytes(obj)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def torch_load_cause(e: Exception) -> str:
    """The error torch.load raised, in one line, without torch's advice to retry with weights_only=False
    (never the remedy for a file this project wrote, and unsafe for one it did not)."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    paragraphs = [p for p in re.split(r"\n\s*\n", str(e))
                  if p.strip() and not p.strip().startswith(boilerplate) and "weights_only" not in p]
    detail = " ".join(" ".join(paragraphs).replace("WeightsUnpickler error:", "").split())
    return f"{type(e).__name__}: {detail[:300]}" if detail else type(e).__name__


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path):
    return json.loads(Path(path).read_text())


