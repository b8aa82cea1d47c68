"""The report's extensions section: each variant of the paper's open questions against the single-pass GAttANet it
varies (same backbone, seeds and test images), clean and at σ*, and fine-tuning with attention against the
fine-tuning control, with Holm's correction over the section's rows at each σ."""

from __future__ import annotations

from gattanet.analysis.stats import CONTRADICTED, INCONCLUSIVE, SUPPORTED, Estimate, holm_adjusted, verdict

from pipeline.config import Params
from pipeline.recompute import extension_difference

from .claims import ci_text, estimate, pct
from .load import Outputs

EXTENSIONS_COMMAND = "gattanet-cli profile extensions && dvc repro"
WORDS = {SUPPORTED: "better", CONTRADICTED: "worse", INCONCLUSIVE: "inconclusive"}
SETTING_WORDS = {"iterations": "T = {} attention passes", "heads": "H = {} heads",
                 "query": "{} query", "finetune_lr": "backbone fine-tuned at lr {:g}"}


def what_changed(changes: dict) -> str:
    """'T = 2 attention passes', 'backbone fine-tuned at lr 0.0001, no attention' (the fine-tuning control)."""
    parts = [SETTING_WORDS[k].format(v) for k, v in changes.items() if k in SETTING_WORDS]
    if changes.get("attention") is False:
        parts.append("no attention (the fine-tuning control)")
    return ", ".join(parts) or ", ".join(f"{k} = {v}" for k, v in changes.items())


def control_of(key: str, exts: dict[str, dict]) -> str | None:
    """The fine-tuning control of fine-tuning extension `key`: attention off, the same run and fine-tuning lr."""
    r = exts[key]
    if not r.get("finetune") or r.get("attention") is False:
        return None
    return next((k for k, c in exts.items() if c.get("attention") is False and c["run"] == r["run"]
                 and c.get("finetune_lr") == r.get("finetune_lr")), None)


def judged(estimates: list[Estimate], alpha: float, holm: bool, family: int | None = None) -> list[tuple[str, str]]:
    """(verdict, note) per estimate: better / worse when its CI excludes 0, demoted to inconclusive where Holm's
    step-down over the estimates (each one's one-sided p of the outcome it reached) misses `alpha`. `family`: the
    family's whole size where some of its comparisons ran elsewhere; those enter with p = 1 (never less conservative
    than Holm over the whole family)."""
    raw_verdicts = [verdict(e) for e in estimates]
    ps = [e.p_above() if v == SUPPORTED else e.p_below() if v == CONTRADICTED else min(e.p_above(), e.p_below())
          for e, v in zip(estimates, raw_verdicts)]
    unseen = max(0, (family or 0) - len(ps))
    adjusted = holm_adjusted(ps + [1.0] * unseen)[:len(ps)] if holm and ps else ps
    out = []
    for e, v, p, adj in zip(estimates, raw_verdicts, ps, adjusted):
        if v != INCONCLUSIVE and adj >= alpha:
            out.append((INCONCLUSIVE, f"{WORDS[v]} before Holm's correction (p = {p:.3g}), adjusted p = {adj:.3g}"))
        elif v == INCONCLUSIVE:
            out.append((v, f"detectable with 80 % power: ±{100 * e.detectable_80:.2f} pts"))
        else:
            out.append((v, ""))
    return out


def extensions_section(out: Outputs, params: Params, alpha: float, holm: bool) -> dict:
    """Rows: every extension that ran (its settings, cost and accuracy, variant − GAttANet at each σ with a verdict),
    then fine-tuning − its control; `not_run` lists the extensions of params without outputs, with their command."""
    listed = params.extensions
    if not listed:
        return {"missing": EXTENSIONS_COMMAND, "rows": [], "pairs": [], "not_run": [], "family": 0, "holm": holm,
                "alpha": alpha}
    exts = {k: out.extensions[k] for k in listed if k in out.extensions}
    sigmas = sorted({float(r["sigmas"][-1]) for r in exts.values()})
    comparisons = [(k, i, estimate(r["vs_gattanet"][i])) for k, r in exts.items() for i in range(len(r["sigmas"]))]
    pairs = []
    for k in exts:
        ctl = control_of(k, exts)
        if ctl is None:
            continue
        if k in out.extension_arrays and ctl in out.extension_arrays:
            diffs = extension_difference(out.extension_arrays[k], out.extension_arrays[ctl])
            pairs.append((k, ctl, [estimate(d) for d in diffs]))
    family = [e for *_, e in comparisons] + [e for *_, es in pairs for e in es]
    verdicts = iter(judged(family, alpha, holm))
    by = {(k, i): next(verdicts) for k, i, _ in comparisons}
    rows = []
    for k, r in exts.items():
        cells = []
        for i, sigma in enumerate(r["sigmas"]):
            e = estimate(r["vs_gattanet"][i])
            v, note = by[k, i]
            cells.append({"sigma": f"{sigma:g}", "variant": pct(r["variant_acc"][i]), "gattanet": pct(r["reference_acc"][i]),
                          "diff": ci_text(e), "verdict": v, "word": WORDS[v], "note": note})
        rows.append({"key": k, "run": r["run"], "what": what_changed(r["changes"]),
                     "params": f"{r['trainable_params']:,}", "reference_params": f"{r['reference_params']:,}",
                     "macs": f"{r['macs_per_image'] / 1e6:.2f} M", "macs_ratio": f"{r['macs_per_image'] / r['reference_macs_per_image']:.2f}×",
                     "speed": f"{r['infer_img_per_s']:,.0f}",
                     "speed_ratio": f"{r['infer_img_per_s'] / r['reference_infer_img_per_s']:.2f}×",
                     "gain": ci_text(estimate(r["gain"][0])), "cells": cells,
                     "epochs": ", ".join(str(s["epochs_run"]) for s in r["per_seed"]),
                     "seeds": len(r["seeds"]), "images": f"{r['test_images']:,}"})
    pair_rows = []
    for k, ctl, es in pairs:
        cells = []
        for sigma, e in zip(exts[k]["sigmas"], es):
            v, note = next(verdicts)
            cells.append({"sigma": f"{sigma:g}", "diff": ci_text(e), "verdict": v, "word": WORDS[v], "note": note})
        pair_rows.append({"key": k, "control": ctl, "cells": cells})
    return {"missing": None, "rows": rows, "pairs": pair_rows, "peak": ", ".join(f"{s:g}" for s in sigmas),
            "family": len(family), "holm": holm, "alpha": alpha,
            "not_run": [{"key": k, "command": f"dvc repro extend@{k}"} for k in listed if k not in out.extensions]}
