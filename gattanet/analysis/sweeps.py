"""Noise sweeps (Figures 2a, 4a/4b): per-image correctness of the baseline and of GAttANet models
at every input-noise σ, every model seeing the same noisy images, and the gains' CIs.

The noise claim is decided at one σ* fixed before the run (no maximum over σ, which would pick
whichever σ sampling noise favours): growth = gain(σ*) − gain(0), paired per image and seed. Beside the
paper's absolute σ*, `relative_sigma` picks a dataset-relative one by a rule on the baseline's curve alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from gattanet.engine.evaluate import correct_batched
from gattanet.data.loader import Loader
from gattanet.analysis.stats import Estimate, effect_ci


def sweep_correct(logits_of: Callable[[Tensor], Mapping[str, Tensor]], loader_at: Callable[[float], Loader],
                  sigmas: Sequence[float]) -> dict[str, np.ndarray]:
    """{name: bool (len(sigmas), N)}: top-1 correctness of every model `logits_of` returns, on the
    test images of `loader_at(σ)` (the same noise draws for all models at a σ)."""
    _check_sigmas(sigmas)
    per_sigma = [correct_batched(logits_of, loader_at(float(s))) for s in sigmas]
    return {name: torch.stack([c[name][:, 0] for c in per_sigma]).numpy() for name in per_sigma[0]}


def gains(baseline: np.ndarray, models: np.ndarray) -> np.ndarray:
    """Per-image gains (seeds, sigmas, N) of models (seeds, sigmas, N) over baseline (sigmas, N)."""
    return models.astype(np.float64) - baseline[None].astype(np.float64)


def gain_at(baseline: np.ndarray, models: np.ndarray, i: int) -> Estimate:
    """The gain at σ index i, its CI over seeds and test images."""
    return effect_ci([(1.0, gains(baseline, models)[:, i])])


def growth(baseline: np.ndarray, models: np.ndarray, i: int) -> Estimate:
    """gain(σ_i) − gain(σ_0 = 0), paired per image and seed."""
    g = gains(baseline, models)
    return effect_ci([(1.0, g[:, i] - g[:, 0])])


def relative_sigma(sigmas: Sequence[float], baseline_acc: Sequence[float], chance: float,
                   fraction: float) -> int | None:
    """The dataset-relative σ*: the index of the smallest σ of the sweep at which the *baseline* has lost at
    least `fraction` of its clean margin over chance, acc(σ) ≤ acc(0) − fraction · (acc(0) − chance); None when
    no σ of the sweep gets there. Only the baseline's curve is read, so GAttANet cannot move the choice."""
    _check_sigmas(sigmas)
    acc = np.asarray(baseline_acc, dtype=np.float64)
    if acc.shape != (len(sigmas),):
        raise ValueError(f"baseline_acc needs one accuracy per σ ({len(sigmas)}), got shape {acc.shape}")
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    if not 0 <= chance < acc[0]:
        raise ValueError(f"chance must lie in [0, clean accuracy {acc[0]:.4f}), got {chance}")
    bar = acc[0] - fraction * (acc[0] - chance)
    hit = np.flatnonzero(acc[1:] <= bar + 1e-12)
    return int(hit[0]) + 1 if len(hit) else None


def _check_sigmas(sigmas: Sequence[float]) -> None:
    s = [float(x) for x in sigmas]
    if len(s) < 1 or s[0] != 0 or any(b <= a for a, b in zip(s, s[1:])) or not np.isfinite(s).all():
        raise ValueError(f"sigmas must start at 0 and increase strictly (finite), got {s}")
