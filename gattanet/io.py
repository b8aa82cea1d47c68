"""Atomic file writes: a file appears whole or not at all (temp file in the same folder + os.replace),
and torch files whose bytes depend only on what they hold (see `torch_bytes`)."""

import json
import os
import pickle
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
    it would into `path` itself, never a random temp name. It starts empty, with the usual permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp = folder / path.name
    try:
        tmp.touch()  # 0666 less the umask, as any new file
        yield tmp
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path):
    return json.loads(Path(path).read_text())


def write_csv(path, rows: list[dict], columns: list[str]) -> None:
    lines = [",".join(columns)]
    lines += [",".join(_fmt(r[c]) for c in columns) for r in rows]
    write_text(path, "\n".join(lines) + "\n")


def _fmt(v) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(v)
