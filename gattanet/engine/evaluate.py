"""Accuracy of one or several forwards on the very same batches (same images, same noise
draws), so their differences are paired. Put the models in eval mode first."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from gattanet.data.loader import Loader

Forward = Callable[[Tensor], Tensor]


def _check_topk(topk: tuple[int, ...]) -> tuple[int, ...]:
    topk = tuple(topk)
    if not topk or any(not isinstance(k, int) or k < 1 for k in topk):
        raise ValueError(f"topk must be a non-empty tuple of ints >= 1, got {topk!r}")
    return topk


@torch.no_grad()  # not inference_mode: a forward may enable autograd inside
def correct(forwards: dict[str, Forward], loader: Loader,
            topk: tuple[int, ...] = (1,)) -> dict[str, Tensor]:
    """{name: bool (N, len(topk)) on the CPU}: whether image n's label is among each forward's k
    highest logits, in loader order, every forward seeing the same batches (so the rows pair up)."""
    if not forwards:
        raise ValueError("no forwards to evaluate")
    return correct_batched(lambda x: {name: forward(x) for name, forward in forwards.items()}, loader, topk)


@torch.no_grad()
def correct_batched(logits_of: Callable[[Tensor], dict[str, Tensor]], loader: Loader,
                    topk: tuple[int, ...] = (1,)) -> dict[str, Tensor]:
    """As `correct`, for one function that gives every model's logits of a batch at once (so they
    can share work, e.g. `gattanet.engine.fast_eval.shared_logits`)."""
    topk = _check_topk(topk)
    rows: dict[str, list[Tensor]] = {}
    for x, y in loader.epoch(0):
        for name, logits in logits_of(x).items():
            if max(topk) > logits.shape[1]:
                raise ValueError(f"top-{max(topk)} asked of {logits.shape[1]} classes")
            ranked = logits.topk(max(topk), dim=1).indices == y[:, None]
            rows.setdefault(name, []).append(torch.stack([ranked[:, :k].any(1) for k in topk], dim=1).cpu())
    if not rows:
        raise ValueError("the loader is empty")
    return {name: torch.cat(r) for name, r in rows.items()}


def accuracies(forwards: dict[str, Forward], loader: Loader,
               topk: tuple[int, ...] = (1,)) -> dict[str, dict[str, float]]:
    """{name: {"top1": ..., "top5": ...}}: the fraction of images whose label is among each
    forward's k highest logits, every forward seeing the same batches."""
    topk = _check_topk(topk)
    return {name: topk_accuracy(c, topk) for name, c in correct(forwards, loader, topk).items()}


def topk_accuracy(hits: Tensor, topk: tuple[int, ...] = (1,)) -> dict[str, float]:
    """{"top1": ..., ...} from a (N, len(topk)) correctness table of `correct`."""
    return {f"top{k}": int(h) / len(hits) for k, h in zip(topk, hits.sum(0))}


def accuracy(forward: Forward, loader: Loader, topk: tuple[int, ...] = (1,)) -> dict[str, float]:
    """{"top1": ...} of a single forward."""
    return accuracies({"forward": forward}, loader, topk)["forward"]
