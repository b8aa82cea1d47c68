"""The related work's from-scratch track as the stages build and train it: each network in the toy's place at the
toy's parameter count, every weight trained; GAttANet trained jointly with a fresh toy as its reference; the
baselines stage writing the per-image arrays from which the report pairs each method with its track's GAttANet."""

import json

import numpy as np
import pytest
import torch
import yaml

from gattanet.adapters.budget import BUDGET_TOL
from gattanet.adapters.scratch import toy_total
from gattanet.models.registry import build_backbone
from gattanet.build import FROM_SCRATCH, build_model
from gattanet.models.spec import AttentionSpec

ATTN = AttentionSpec(16, 0.25, False, False, 1, "full")


@pytest.mark.parametrize("kind", FROM_SCRATCH)
def test_each_from_scratch_model_is_fresh_at_the_toys_size_and_trains_whole(kind):
    torch.manual_seed(0)
    backbone = build_backbone("toy", 10, 1)
    built = build_model(kind, backbone, ATTN)
    total = toy_total(1, 10)
    n = sum(p.numel() for p in built.trainable)
    assert n == sum(p.numel() for p in built.model.parameters())  # nothing frozen
    if kind == "gattanet-scratch":
        assert n == total + ATTN.trainable_params(backbone.taps())
        assert built.model.backbone is not backbone
    else:
        assert abs(n - total) <= BUDGET_TOL * total, (kind, n, total)
    assert not any(p is q for p in built.trainable for q in backbone.parameters())
    assert built.model(torch.rand(2, 1, 32, 32)).shape == (2, 10)


def test_the_from_scratch_track_refuses_a_resnet():
    with pytest.raises(ValueError, match="the from-scratch track replaces the toy CNN; got a resnet18 backbone"):
        build_model("sk", build_backbone("resnet18", 10, 1), ATTN)


@pytest.mark.slow
def test_baselines_stage_pairs_a_from_scratch_method_with_joint_gattanet(project):
    """sk, RAM and gattanet-scratch through `gattanet-cli stage baselines`: their arrays load, the JSON's gains are
    the arrays', the report's rows of sk and RAM carry their paired differences from the jointly trained GAttANet,
    and what the protocol forces on each is listed under the table."""
    from typer.testing import CliRunner

    from pipeline import outputs
    from pipeline.cli import app
    from pipeline.recompute import read_arrays
    from pipeline.config import read_yaml, validate
    from pipeline.report.tables import baselines_section
    from tests.report_fixtures import loaded

    params = read_yaml((project / "params.yaml").read_text())
    params["baselines"].update(methods=["gattanet", "gattanet-scratch", "sk", "ram"], train_subset=64)
    params["backbones"]["toy-fmnist"]["train_subset"] = 64
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    runner = CliRunner()
    for args in (["pretrain", "toy-fmnist"], ["train-attn", "toy-fmnist-d16"], ["train-attn", "toy-fmnist-d4"],
                 ["baselines", "gattanet-scratch"], ["baselines", "sk"], ["baselines", "ram"]):
        r = runner.invoke(app, ["stage", *args])
        assert r.exit_code == 0, (args, r.output)
    for m in ("gattanet-scratch", "sk", "ram"):
        res = json.loads(outputs.BASELINES.path(m).read_text())
        z = read_arrays(outputs.BASELINES_CORRECT.path(m), outputs.BASELINES_CORRECT.names)
        assert z["correct"].shape == (len(res["seeds"]), len(res["sigmas"]), res["test_images"])
        assert res["clean_acc"] == pytest.approx(z["correct"][:, 0].mean())
        assert res["within_budget"] is None
    out = loaded(params, project)
    section = baselines_section(out, validate(params))
    rows = {r["method"]: r for r in section["rows"]}
    assert rows["gattanet-scratch"]["vs_gattanet"] == "the reference" and rows["gattanet-scratch"]["track"] == "scratch"
    a, b = out.baseline_arrays["sk"]["correct"][:, 0], out.baseline_arrays["gattanet-scratch"]["correct"][:, 0]
    assert rows["sk"]["vs_gattanet"].startswith(f"{100 * (a.mean() - b.mean()):+.2f} pts")
    assert rows["sk"]["vs_verdict"] in ("better", "worse", "inconclusive")
    assert rows["ram"]["label"] == "RAM" and rows["ram"]["track"] == "scratch"
    assert rows["ram"]["budget"].startswith("within ±5 % of the plain toy's")
    assert [g["label"] for g in section["deviations"]] == ["Every conv replacement (from-scratch track)",
                                                           "Selective Kernel", "RAM"]
    assert np.array_equal(out.baseline_arrays["sk"]["seeds"], params["attention"]["toy-fmnist-d16"]["seeds"])


def test_what_the_protocols_force_is_listed_once_per_track_and_per_method():
    from gattanet.adapters import ram
    from gattanet.adapters.addons import ADDON_DEVIATIONS
    from pipeline.report.tables import method_deviations

    assert method_deviations(["gattanet", "toy-scratch", "wider-toy"]) == []
    groups = {g["label"]: g["items"] for g in method_deviations(["gattanet", "se", "eca", "ram"])}
    assert list(groups) == ["Every add-on module (add-on track)", "ECA", "RAM"]  # SE's own list is empty
    assert groups["Every add-on module (add-on track)"] == list(ADDON_DEVIATIONS["*"])
    assert groups["RAM"] == list(ram.RAM_DEVIATIONS)


def test_a_tracks_methods_left_out_of_the_profile_are_named():
    from pipeline.report.tables import methods_left_out as left_out

    assert left_out([]) == [] and left_out(["gattanet"]) == []
    addon = ["gattanet", "se", "eca", "cbam", "bam", "gather-excite", "non-local", "gsa", "ran-mask", "ltpa"]
    assert left_out(addon) == [{"track": "addon", "labels": ["AA-conv", "MHSA"]}]
    scratch = left_out(["gattanet", "wider-toy"])
    assert [t["track"] for t in scratch] == ["scratch"] and "RAM" in scratch[0]["labels"]
    assert "wider toy CNN" not in scratch[0]["labels"]


def test_the_budget_line_names_only_the_tracks_the_profile_runs():
    """A from-scratch-only profile's report does not describe a frozen backbone or the add-on track's unused cap;
    an add-on profile's does, and a profile with both tracks gives both sentences."""
    from types import SimpleNamespace as Cfg

    from pipeline.report.tables import _budget

    params = Cfg(attention={"r": Cfg(batch_size=128, lr=0.001, patience=1, seeds=(0, 1, 2))},
                 backbones={"bb": Cfg(epochs=10, patience=3, train_subset=20000, lr=0.001, batch_size=128)})
    cfg = {"run": "r", "backbone": "bb", "epochs": 7, "train_subset": 0}
    scratch = _budget(Cfg(**cfg, methods=("toy-scratch", "sk", "ram")), params)
    assert "frozen bb backbone" not in scratch and "7 epochs" not in scratch
    assert "at most 10 epochs (patience 3) on a seeded subset of 20,000 training images" in scratch
    assert "(3 seeds)" in scratch
    addon = _budget(Cfg(**cfg, methods=("gattanet", "se")), params)
    assert "at most 7 epochs on all training images" in addon and "frozen bb backbone" in addon
    assert "from-scratch" not in addon
    both = _budget(Cfg(**cfg, methods=("gattanet", "sk")), params)
    assert both.startswith(addon) and "from-scratch track" in both


def test_the_paired_comparisons_with_gattanet_are_judged_with_holm_over_the_track():
    """A row better than GAttANet before Holm's step-down over its track's comparisons (every row, clean and at σ*)
    but not after it is printed inconclusive with both p-values; without the correction it stays better."""
    from types import SimpleNamespace

    from gattanet.analysis.stats import effect_ci
    from pipeline.report.tables import _paired_with_gattanet

    rng = np.random.default_rng(0)
    seeds, n, alpha = np.array([0, 1, 2]), 4000, 0.025
    ref = rng.random((3, 1, n)) < 0.8
    ref = np.concatenate([ref, ref], axis=1)  # σ = 0 and σ* alike

    def better_by(k: int) -> np.ndarray:  # 100 + k images GAttANet misses right, 100 it gets right wrong, per seed
        out = ref.copy()
        for s in range(3):
            out[s, :, np.flatnonzero(~ref[s, 0])[:100 + k]] = True
            out[s, :, np.flatnonzero(ref[s, 0])[:100]] = False
        return out

    def p_of(c: np.ndarray) -> float:
        return effect_ci([(1.0, c[:, 0].astype(float)), (-1.0, ref[:, 0].astype(float))], paired=True).p_above()

    marginal = next(k for k in range(1, 400) if p_of(better_by(k)) < alpha)  # better alone, not after Holm (×2)
    assert p_of(better_by(marginal)) * 2 >= alpha
    arrays = {m: {"seeds": seeds, "sigmas": np.array([0.0, 0.035]), "correct": c}
              for m, c in (("gattanet", ref), ("se", better_by(400)), ("eca", better_by(marginal)))}
    out = SimpleNamespace(baseline_arrays=arrays, baselines={m: {"peak_sigma": 0.035} for m in arrays})
    for holm, word in ((False, "better"), (True, "inconclusive")):
        rows = [{"method": m} for m in arrays]
        _paired_with_gattanet(rows, out, alpha, holm)
        by = {r["method"]: r for r in rows}
        assert by["gattanet"]["vs_gattanet"] == "the reference"
        assert by["se"]["vs_verdict"] == by["se"]["vs_verdict_peak"] == "better"
        assert by["eca"]["vs_verdict"] == by["eca"]["vs_verdict_peak"] == word
    assert by["eca"]["vs_note"].startswith("better before Holm's correction (p = ") and "adjusted p" in by["eca"]["vs_note"]
