"""Ways to stop a run as a kill would, for the resume and kill tests: in process, a training loader that
raises when an epoch starts; out of process, `kill -9` of a stage at its k-th write (tests/killhook)."""

import json
import os
from pathlib import Path

from gattanet.data.loader import TensorLoader

KILL_HOOK = Path(__file__).resolve().parent / "killhook"  # its sitecustomize.py arms the stage process


class Interrupted(TensorLoader):
    """Raises when epoch `at` starts (None: never), as a killed run would stop."""

    def __init__(self, *args, at: int | None = None, **kw):
        super().__init__(*args, **kw)
        self.at = at

    def epoch(self, e):
        if e == self.at:
            raise KeyboardInterrupt(f"killed at epoch {e}")
        yield from super().epoch(e)


def kill_env(env: dict, stage: str, at: int, trace: Path) -> dict:
    """`env` for a command (`dvc repro`, whose child runs the stage) under which the process of
    `gattanet-cli stage STAGE` (e.g. "train-attn toy-fmnist-d16") records each of its writes to an output
    or resume file in `trace` (one JSON line: n, kind, path) and kills itself with SIGKILL just before
    write number `at` (0: never; the trace of a whole run). Other processes (DVC, other stages) are not armed.
    Writes: `open` for writing, `replace`, `rename` and `remove` (os.remove/unlink, shutil.rmtree) of a
    path under data/, models/, results/, reports/ or .gattanet/, outside temp folders (`*.tmp`)."""
    path = os.pathsep.join([str(KILL_HOOK), *filter(None, [env.get("PYTHONPATH")])])
    return dict(env, PYTHONPATH=path, GATTANET_TEST_KILL_STAGE=stage, GATTANET_TEST_KILL_AT=str(at),
                GATTANET_TEST_KILL_TRACE=str(trace))


def read_trace(trace: Path) -> list[dict]:
    """The writes a run under `kill_env` recorded, in order (the last one is where it died, if it did)."""
    return [json.loads(line) for line in Path(trace).read_text().splitlines()] if Path(trace).exists() else []


def write_number(trace: list[dict], kind: str, path: str, nth: int = 1) -> int:
    """The number of the `nth` write of `kind` to `path` in a trace (KeyError if it has fewer)."""
    hits = [w["n"] for w in trace if w["kind"] == kind and w["path"] == path]
    if len(hits) < nth:
        raise KeyError(f"no write {nth} of kind {kind!r} to {path} in the trace ({len(hits)} found)")
    return hits[nth - 1]
