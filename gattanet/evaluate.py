"""Accuracy of one or several forwards on the very same batches (same images, same noise
draws), so their differences are paired. Put the models in eval mode first."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from gattanet.loader import Loader

Forward = Callable[[Tensor], Tensor]


def _check_topk(topk: tuple[int, ...]) -> tuple[int, ...]:
    topk = tuple(topk)
    if not topk or any(not isinstance(k, int) or k < 1 for k in topk):
        raise ValueError(f"topk must be a non-empty tuple of ints >= 1, got {topk!r}")
    return topk


@torch.no_grad()  # not inference_mode: a forward may enable autograd inside
def accuracies(forwards: dict[str, Forward], loader: Loader,
               topk: tuple[int, ...] = (1,)) -> dict[str, dict[str, float]]:
    """{name: {"top1": ..., "top5": ...}}: the fraction of images whose label is among each
    forward's k highest logits, every forward seeing the same batches."""
    topk = _check_topk(topk)
    if not forwards:
        raise ValueError("no forwards to evaluate")
    hits = {name: torch.zeros(len(topk), dtype=torch.int64) for name in forwards}
    seen = 0
    for x, y in loader.epoch(0):
        for name, forward in forwards.items():
            logits = forward(x)
            if max(topk) > logits.shape[1]:
                raise ValueError(f"top-{max(topk)} asked of {logits.shape[1]} classes")
            ranked = logits.topk(max(topk), dim=1).indices == y[:, None]
            hits[name] += torch.stack([ranked[:, :k].any(1).sum() for k in topk]).cpu()
        seen += len(y)
    if seen == 0:
        raise ValueError("the loader is empty")
    return {name: {f"top{k}": int(h) / seen for k, h in zip(topk, counts)}
            for name, counts in hits.items()}


def accuracy(forward: Forward, loader: Loader, topk: tuple[int, ...] = (1,)) -> dict[str, float]:
    """{"top1": ...} of a single forward."""
    return accuracies({"forward": forward}, loader, topk)["forward"]


@torch.no_grad()
def predictions(forward: Forward, loader: Loader) -> tuple[Tensor, Tensor]:
    """(predicted class, label) of every image, on the CPU, in loader order."""
    preds, labels = [], []
    for x, y in loader.epoch(0):
        preds.append(forward(x).argmax(1).cpu())
        labels.append(y.cpu())
    if not preds:
        raise ValueError("the loader is empty")
    return torch.cat(preds), torch.cat(labels)
