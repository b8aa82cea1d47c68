"""Matched parameter budgets: adapter widths whose trainable count is closest to GAttANet's, and the
wider toy backbone whose total count matches toy + GAttANet (the paper's matched-parameter control).

Counts come from building the real modules on the meta device (no memory, no weights), so they
cannot drift from the modules. Widths are not capped by the layers' channels: matching the budget
is the point, so an SE hidden layer may end up wider than a narrow layer. Not matchable:
- ECA, always: its only weights are one k-tap kernel per layer (k odd, at most 2·min(C) − 1), far
  below any GAttANet budget; its real count is reported instead (`UNMATCHABLE`).
- budgets below an adapter's smallest size (Gather-Excite's fixed depthwise gather; aa-conv and
  gsa at width = HEADS), e.g. at d = 4: `within_budget` says so and the real count is reported.
"""

from collections.abc import Callable, Sequence
from functools import cache

import torch

from gattanet.adapters.modules import ADAPTERS, HEADS, build_adapter
from gattanet.models.taps import Tap
from gattanet.models.toy import ToyCNN

UNMATCHABLE = ("eca",)
TOY_WIDTHS, TOY_HIDDEN = (32, 64, 128), 256


def _conv_taps(taps: Sequence[Tap]) -> list[Tap]:
    conv = [t for t in taps if t.kind == "conv"]
    if not conv:
        raise ValueError("no conv taps: adapters go on conv taps only")
    return conv


def adapter_params(method: str, taps: Sequence[Tap], width: int) -> int:
    """Trainable parameters of one `method` adapter of size `width` on each conv tap."""
    if method not in ADAPTERS:
        raise ValueError(f"unknown adapter {method!r}; allowed: {', '.join(ADAPTERS)}")
    with torch.device("meta"):
        return sum(p.numel() for t in _conv_taps(taps)
                   for p in build_adapter(method, t.channels, width, t.shape[1:]).parameters())


def _closest(candidates: Sequence[int], count: Callable[[int], int], target: int) -> tuple[int, int]:
    """The candidate whose (non-decreasing) count is closest to target, ties to the smaller: bisection."""
    lo, hi = 0, len(candidates) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if count(candidates[mid]) >= target:
            hi = mid
        else:
            lo = mid + 1
    best = candidates[lo]
    if lo > 0 and abs(count(candidates[lo - 1]) - target) <= abs(count(best) - target):
        best = candidates[lo - 1]
    return best, count(best)


def _check_target(target: int) -> None:
    if not isinstance(target, int) or isinstance(target, bool) or target < 1:
        raise ValueError(f"target parameter count must be an integer >= 1, got {target!r}")


def match_width(method: str, taps: Sequence[Tap], target: int) -> tuple[int, int]:
    """(width, params): the valid width whose adapters' count is closest to `target`. Valid widths:
    ECA odd kernels up to 2·min(C) − 1; aa-conv and gsa multiples of HEADS; the others any width >= 1."""
    _check_target(target)
    count = cache(lambda w: adapter_params(method, taps, w))
    if method == "eca":
        candidates = range(1, 2 * min(t.channels for t in _conv_taps(taps)), 2)
    else:
        step = HEADS if method in ("aa-conv", "gsa") else 1
        upper = step
        while count(upper) < target:
            upper *= 2
        candidates = range(step, upper + 1, step)
    return _closest(candidates, count, target)


def within_budget(params: int, target: int, tol: float = 0.10) -> bool:
    """Whether params is within ±tol (a fraction) of target."""
    _check_target(target)
    if not 0 <= tol < 1:
        raise ValueError(f"tol must be a fraction in [0, 1), got {tol!r}")
    return abs(params - target) <= tol * target


def _toy_config(n: int) -> tuple[tuple[int, ...], int]:
    """The toy scaled by s = n / 256: hidden n, widths round(32 s), round(64 s), round(128 s)."""
    return tuple(max(1, round(w * n / TOY_HIDDEN)) for w in TOY_WIDTHS), n


def wider_toy_widths(target_total: int, in_channels: int, num_classes: int,
                     input_size: int = 32) -> tuple[tuple[int, ...], int, int]:
    """(widths, hidden, params) of the toy scaled by one common factor (on a 1/256 grid, each size
    rounded) whose total parameter count is closest to `target_total` (= toy + GAttANet at the same d)."""
    _check_target(target_total)

    @cache
    def count(n: int) -> int:
        widths, hidden = _toy_config(n)
        with torch.device("meta"):
            net = ToyCNN(in_channels, num_classes, widths, hidden, input_size=input_size)
        return sum(p.numel() for p in net.parameters())

    upper = TOY_HIDDEN
    while count(upper) < target_total:
        upper *= 2
    n, params = _closest(range(1, upper + 1), count, target_total)
    widths, hidden = _toy_config(n)
    return widths, hidden, params
