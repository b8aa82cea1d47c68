"""The clean gain across backbones: where ≥ 3 backbones of one arch and dataset each carry an attention run of
the same kind (d, lesion, the variant fields of gattanet.models.spec.PAPER), their clean per-image gains (the noise arrays at σ = 0) combine into one
random-effects interval with backbones as the top level (gattanet.analysis.stats.across_backbones), so the
verdict is about the recipe that trains a backbone, not one trained network.
"""

from dataclasses import dataclass

import numpy as np

from gattanet.analysis.stats import Estimate, across_backbones
from gattanet.models.spec import PAPER
from pipeline import outputs

from .load import Outputs

MIN_BACKBONES = 3  # the fewest backbones whose interval the report leads with (issue 20, deliverable 7)


@dataclass
class AcrossGroup:
    """One (arch, dataset, d) group of attention runs on distinct backbones, and its across-backbone interval."""

    arch: str
    dataset: str
    attn_dim: int
    runs: dict[str, str]              # backbone key -> its attention run's key
    effect: Estimate | None = None    # None when it cannot be formed (`missing` or `problem` says why)
    missing: tuple[str, ...] = ()     # runs without noise arrays at σ = 0
    problem: str = ""                 # across_backbones' refusal (e.g. backbones tested on different images)
    baseline_acc: float | None = None  # the backbones' mean clean accuracy (the size row's error), from the arrays

    @property
    def label(self) -> str:
        return f"{self.arch} on {self.dataset}, d = {self.attn_dim}: across {len(self.runs)} backbones"


def across_groups(out: Outputs) -> list[AcrossGroup]:
    """Every group of ≥ MIN_BACKBONES backbones of one arch and dataset with an attention run at the same d (and
    the same lesion and iterations; a backbone's first such run), in the order of the attention runs."""
    groups: dict[tuple, dict[str, str]] = {}
    for key, m in out.train_attn.items():
        kind = (m["arch"], m["dataset"], m["attn_dim"], m.get("lesion"), *(m.get(k, v) for k, v in PAPER.items()),
                m.get("attention", True))
        groups.setdefault(kind, {}).setdefault(m["backbone_run"], key)
    found = []
    for (arch, dataset, d, *_), runs in groups.items():
        if len(runs) < MIN_BACKBONES:
            continue
        per_backbone, missing, base = [], [], []
        for key in runs.values():
            gains = seed_gains(out, key)
            if gains is None:
                missing.append(key)
            else:
                per_backbone.append(gains)
                base.append(clean_baseline(out, key))
        group = AcrossGroup(arch, dataset, d, runs, missing=tuple(missing),
                            baseline_acc=float(np.mean(base)) if base and not missing else None)
        if not missing:
            try:
                group.effect = across_backbones(per_backbone)
            except ValueError as e:
                group.problem = str(e)
        found.append(group)
    return found


def seed_gains(out: Outputs, key: str) -> np.ndarray | None:
    """A run's clean per-image gains GAttANet − baseline, float (seeds, N), from its noise arrays at σ = 0
    (None when the arrays or a σ = 0 in them are missing)."""
    path = outputs.NOISE_CORRECT.path(key, out.root)
    if not path.exists():
        return None
    with np.load(path) as z:
        sigmas = [float(s) for s in z["sigmas"]]
        if 0.0 not in sigmas:
            return None
        i = sigmas.index(0.0)
        return z["gattanet"][:, i].astype(np.float64) - z["baseline"][i].astype(np.float64)[None, :]


def clean_baseline(out: Outputs, key: str) -> float:
    """A run's baseline accuracy at σ = 0 from its noise arrays (seed_gains found them)."""
    with np.load(outputs.NOISE_CORRECT.path(key, out.root)) as z:
        i = [float(s) for s in z["sigmas"]].index(0.0)
        return float(z["baseline"][i].mean())


def across_spread_text(group: AcrossGroup) -> str:
    """What the across-backbone interval was made of, in backbones where a seed-level one counts seeds."""
    est, b = group.effect, len(group.runs)
    clamped = (" — the between-backbone component is estimated at 0 (clamped), so the width is the images' (a "
               f"fixed-effect width) on the t quantile of the {b} backbones' {b - 1} df") if est.sd_seeds == 0 else ""
    return (f"random effects, backbones the top level: {b} backbones (each the mean of its attention "
            f"seeds) × {est.images:,} test images; sd from images {100 * est.sd_images:.2f} pts, from backbones "
            f"{100 * est.sd_seeds:.2f} pts, df {est.df:.3g} (at most B − 1 = {b - 1}){clamped}")
