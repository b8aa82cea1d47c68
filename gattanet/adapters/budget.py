"""Matched parameter budgets: the knob value whose add-on's trainable count is closest to GAttANet's,
and the wider toy backbone whose total count matches toy + GAttANet (the paper's matched-parameter control).

Counts come from building the real modules on the meta device (no memory, no weights), so they cannot
drift from the modules; tests/test_adapters.py checks them against the papers' formulas
(gattanet.adapters.addons).
"""

import math
from collections.abc import Callable, Sequence
from functools import cache

import torch

from gattanet.adapters.addons import ADDONS, UNMATCHABLE, conv_taps
from gattanet.models.taps import Tap
from gattanet.models.toy import ToyCNN

TOY_WIDTHS, TOY_HIDDEN = (32, 64, 128), 256
MAX_WIDTH = 1 << 14  # the matcher's widest width: far above any budget here
BUDGET_TOL = 0.05  # an add-on is matched when its trainable count is within ±5 % of GAttANet's

MATCHING_RULE = (
    "Budget rule (add-on track): an add-on's trainable parameters, all of them in modules on the backbone's "
    "conv taps (LTPA's head reads those taps and the penultimate dense one), are matched to GAttANet's total "
    "trainable count at the same d, within ±5 %. The total is the target, not GAttANet's conv-tap share: "
    "GAttANet's key/query projections of the dense taps (on the toy fc1 and the logits, 54 % of its 15,781 "
    "parameters at d = 16) have no counterpart in a feature-map module, and what is compared is what each "
    "method may learn on the same frozen backbone. One knob per method sets the width at every conv tap by "
    "the paper's ratio (a reduction ratio r, an attention width ratio υ, LTPA's rank), so the layers keep "
    "the paper's proportions; the knob value with the closest count wins (ties to the smaller). A method "
    "without a width (ECA: its kernel size follows its own rule) runs at its own size, marked unmatchable; "
    "a method whose smallest size is above the budget (LTPA's classifier, K·ΣC_s weights, at 100 classes on "
    "the toy) or whose counts jump past the ±5 % band is run at its closest count and marked outside the "
    "budget (the record's within_budget).")


def _check_method(method: str) -> None:
    if method not in ADDONS:
        raise ValueError(f"unknown adapter {method!r}; allowed: {', '.join(ADDONS)}")


def adapter_params(method: str, taps: Sequence[Tap], knob) -> int:
    """Trainable parameters of the `method` add-on on `taps` at `knob`, counted on the built modules."""
    from gattanet.adapters.model import build_addon

    _check_method(method)
    with torch.device("meta"):
        return sum(p.numel() for p in build_addon(method, list(taps), knob).parameters())


def closest(candidates: Sequence, count: Callable[[object], int], target: int) -> tuple:
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


def check_target(target: int) -> None:
    if not isinstance(target, int) or isinstance(target, bool) or target < 1:
        raise ValueError(f"target parameter count must be an integer >= 1, got {target!r}")


def knob_candidates(method: str, taps: Sequence[Tap], max_width: int) -> list:
    """One knob value inside every interval of knob values that gives the conv taps one set of widths,
    up to the narrowest tap reaching `max_width`, in the order of growing modules (r descending,
    υ and a rank ascending). A width k·step starts at υ = (k − ½)·step/C (rounding half up, r = 1/υ);
    each candidate is the shortest decimal strictly between two consecutive starts."""
    _check_method(method)
    a = ADDONS[method]
    channels = sorted({t.channels for t in conv_taps(taps)})
    if a.knob_kind == "rank":
        return list(range(a.step, max_width + 1, a.step))
    if a.knob_kind not in ("reduction", "ratio"):
        raise ValueError(f"{method}: has no knob to match ({a.knob})")
    top = (max_width + a.step / 2) / channels[0]  # the narrowest tap's width reaches max_width below it
    starts = sorted({(k - 0.5) * a.step / c for c in channels for k in range(2, int(top * c / a.step) + 2)
                     if (k - 0.5) * a.step / c <= top})
    bounds = [0.0] + starts
    if a.knob_kind == "ratio":
        return [shortest_between(lo, hi) for lo, hi in zip(bounds, bounds[1:])]
    return [shortest_between(1 / hi, 1 / lo if lo else 2 / hi) for lo, hi in zip(bounds, bounds[1:])]


def shortest_between(lo: float, hi: float) -> float:
    """The number with the fewest decimals strictly inside (lo, hi), clear of both ends (a knob value that
    reads well and sits away from the rounding boundaries)."""
    margin = 1e-9 * hi
    for digits in range(13):
        step = 10.0 ** -digits
        c = (math.floor((lo + margin) / step) + 1) * step
        if c < hi - margin:
            return round(c, digits)
    return (lo + hi) / 2


def match_width(method: str, taps: Sequence[Tap], target: int) -> tuple:
    """(knob, params): the knob value whose add-on's count is closest to `target` (see MATCHING_RULE);
    a method without a knob (UNMATCHABLE) gives (None, its own count)."""
    check_target(target)
    _check_method(method)
    if method in UNMATCHABLE:
        return None, adapter_params(method, taps, None)
    count = cache(lambda k: adapter_params(method, taps, k))
    max_width = 8 * ADDONS[method].step
    while count(knob_candidates(method, taps, max_width)[-1]) < target and max_width < MAX_WIDTH:
        max_width *= 2
    return closest(knob_candidates(method, taps, max_width), count, target)


def within_budget(params: int, target: int, tol: float = BUDGET_TOL) -> bool:
    """Whether params is within ±tol (a fraction) of target."""
    check_target(target)
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
    check_target(target_total)

    @cache
    def count(n: int) -> int:
        widths, hidden = _toy_config(n)
        with torch.device("meta"):
            net = ToyCNN(in_channels, num_classes, widths, hidden, input_size=input_size)
        return sum(p.numel() for p in net.parameters())

    upper = TOY_HIDDEN
    while count(upper) < target_total:
        upper *= 2
    n, params = closest(range(1, upper + 1), count, target_total)
    widths, hidden = _toy_config(n)
    return widths, hidden, params


def addon_rows(taps: Sequence[Tap], target: int, tol: float = BUDGET_TOL) -> list[dict]:
    """Per add-on, what the report prints beside its results: its source, knob, the paper's knob and the
    count there, the matched knob, per-tap widths and count (= its formula) against GAttANet's `target`."""
    rows = []
    for name, a in ADDONS.items():
        knob, params = match_width(name, taps, target)
        rows.append({
            "method": name, "title": a.title, "source": a.source, "knob": a.knob, "identity": a.identity,
            "paper_knob": a.paper_knob,
            "paper_params": a.formula(taps, a.paper_knob) if a.paper_knob is not None or a.knob_kind == "fixed"
            else None,
            "matched_knob": knob, "widths": a.widths(taps, knob), "params": params, "formula": a.formula(taps, knob),
            "gattanet_params": target, "matchable": name not in UNMATCHABLE,
            "within_budget": within_budget(params, target, tol)})
    return rows
