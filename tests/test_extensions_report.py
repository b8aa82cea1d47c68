"""The extensions section's rule on synthetic per-image outputs with a known truth: a variant better than, equal to
or worse than its run's GAttANet; Holm's correction over the section; fine-tuning paired with its control."""

from types import SimpleNamespace

import numpy as np
import pytest

from gattanet.analysis.stats import CONTRADICTED, INCONCLUSIVE, SUPPORTED
from pipeline.recompute import extension_difference, extension_estimates
from pipeline.report.claims import estimate
from pipeline.report.extensions import control_of, extensions_section, judged, what_changed
from pipeline.report.load import Outputs

N, SEEDS = 4000, 3


def arrays(p_ref: float, p_var: float, seed: int = 0) -> dict:
    """correct.npz-like arrays: baseline (σ, N), gattanet and variant (seeds, σ, N), 2 σ, each image correct with
    the given probability (independently: an image-dominated design, as the real runs are)."""
    rng = np.random.default_rng(seed)
    return {"sigmas": np.array([0.0, 0.035]), "seeds": np.arange(SEEDS),
            "baseline": rng.random((2, N)) < 0.8,
            "gattanet": rng.random((SEEDS, 2, N)) < p_ref, "variant": rng.random((SEEDS, 2, N)) < p_var}


@pytest.mark.parametrize("p_var, expect", [(0.86, SUPPORTED), (0.80, INCONCLUSIVE), (0.74, CONTRADICTED)])
def test_variant_above_equal_below_gattanet(p_var, expect):
    z = arrays(0.80, p_var)
    est = [estimate(e) for e in extension_estimates(z["baseline"], z["gattanet"], z["variant"])["vs_gattanet"]]
    assert [v for v, _ in judged(est, alpha=0.025, holm=True)] == [expect, expect]
    if expect == INCONCLUSIVE:
        assert "detectable with 80 % power" in judged(est, 0.025, True)[0][1]


def test_pairing_is_per_seed_and_the_gain_is_over_the_backbone():
    z = arrays(0.80, 0.86)
    est = extension_estimates(z["baseline"], z["gattanet"], z["variant"])
    assert est["vs_gattanet"][0]["paired"] and not est["gain"][0]["paired"]
    assert est["gain"][0]["mean"] == pytest.approx(z["variant"][:, 0].mean() - z["baseline"][0].mean())
    assert est["vs_gattanet"][1]["mean"] == pytest.approx(z["variant"][:, 1].mean() - z["gattanet"][:, 1].mean())


def test_holm_demotes_a_row_that_clears_alpha_only_on_its_own():
    """One weak effect (one-sided p between α/k and α) among k − 1 null rows: decided alone, inconclusive after Holm."""
    z = arrays(0.80, 0.80)
    null = [estimate(e) for e in extension_estimates(z["baseline"], z["gattanet"], z["variant"])["vs_gattanet"]]
    weak = None
    for seed in range(200):  # a synthetic effect whose one-sided p lands in (α/3, α)
        w = arrays(0.80, 0.813, seed)
        e = estimate(extension_estimates(w["baseline"], w["gattanet"], w["variant"])["vs_gattanet"][0])
        if 0.025 / 3 < e.p_above() < 0.025:
            weak = e
            break
    assert weak is not None
    alone = judged([weak], 0.025, holm=True)[0][0]
    together = judged([weak, null[0], null[1]], 0.025, holm=True)[0]
    assert alone == SUPPORTED and together[0] == INCONCLUSIVE and "before Holm's correction" in together[1]
    assert judged([weak, null[0], null[1]], 0.025, holm=False)[0][0] == SUPPORTED


def test_finetuning_is_paired_with_its_control():
    exts = {"ft": {"run": "r", "finetune": True, "finetune_lr": 1e-4, "attention": True},
            "ft-other-lr": {"run": "r", "finetune": True, "finetune_lr": 1e-3, "attention": True},
            "ctl": {"run": "r", "finetune": True, "finetune_lr": 1e-4, "attention": False},
            "t2": {"run": "r", "finetune": False, "attention": True}}
    assert [control_of(k, exts) for k in exts] == ["ctl", None, None, None]
    a, b = arrays(0.8, 0.85, 1), arrays(0.8, 0.8, 2)
    d = extension_difference(a, b)
    assert d[0]["mean"] == pytest.approx(a["variant"][:, 0].mean() - b["variant"][:, 0].mean()) and d[0]["paired"]
    with pytest.raises(ValueError, match="need the same seeds"):
        extension_difference(a, dict(b, seeds=np.arange(1, SEEDS + 1)))


def test_what_changed_reads_the_settings():
    assert what_changed({"iterations": 2}) == "T = 2 attention passes"
    assert what_changed({"finetune": True, "finetune_lr": 1e-4, "attention": False}) == \
        "backbone fine-tuned at lr 0.0001, no attention (the fine-tuning control)"


def test_section_without_extensions_names_the_command(tmp_path):
    out = Outputs(root=tmp_path, train_attn={})
    section = extensions_section(out, SimpleNamespace(extensions={}), 0.025, True)
    assert section["missing"] == "gattanet-cli profile extensions && dvc repro" and not section["rows"]
