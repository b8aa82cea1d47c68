"""The machine side of a stage: which device, seeding before a model is built, and timing."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import torch

from gattanet.engine import distributed

from pipeline.errors import UsageError


def resolve_device(device: str) -> torch.device:
    """`auto` → CUDA when present, else CPU; an explicit CUDA device must exist. A process that torchrun
    started takes the GPU of its local rank (cuda:LOCAL_RANK)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device: {device!r} requested but CUDA is not available here; use auto or cpu")
    if device == "cuda" and distributed.launched():
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
        torch.cuda.set_device(torch.device(device))
    return torch.device(device)


def seeded(seed: int) -> None:
    """Seed torch's global generator before a model is built, so its initial weights repeat."""
    torch.manual_seed(seed)


@contextmanager
def stopwatch():
    """Yield a dict whose 'seconds' is filled in when the block ends."""
    t = {"seconds": 0.0}
    start = time.perf_counter()
    yield t
    t["seconds"] = round(time.perf_counter() - start, 3)
