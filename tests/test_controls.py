"""The controls for "attention, or just more training?": heads at no more parameters than GAttANet's,
the backbone trained on, controls@KEY on the tiny profile, and the claim's rule on synthetic outputs."""

import json

import numpy as np

import pytest
import torch
from typer.testing import CliRunner

from gattanet.models.attention import GlobalAttention
from gattanet.models.heads import HEADS, HeadControl, head_params, residual_rank, trained_on
from gattanet.models.registry import build_backbone
from pipeline.cli import app
from tests.helpers import sh

pytestmark = pytest.mark.usefixtures("one_thread")


def toy(seed: int = 0):
    torch.manual_seed(seed)
    return build_backbone("toy", 10, 1, input_size=32).eval()


def gattanet_params(backbone, dim: int) -> int:
    return sum(p.numel() for p in GlobalAttention(backbone.taps(), dim).parameters())


@pytest.mark.parametrize("dim", [16, 64])
def test_heads_stay_within_gattanets_parameter_count(dim):
    backbone = toy()
    budget = gattanet_params(backbone, dim)
    counts = {kind: HeadControl(backbone, kind, budget).n_params() for kind in HEADS}
    assert counts["vector-scaling"] == 20 and counts["logits"] == 256 * 10 + 10
    assert counts == {kind: head_params(kind, 256, 10, residual_rank(256, 10, budget)) for kind in HEADS}
    assert max(counts.values()) <= budget
    rank = residual_rank(256, 10, budget)  # the largest bottleneck that fits: one more rank would not
    assert head_params("residual-head", 256, 10, rank + 1) > budget
    assert not any(p.requires_grad for p in backbone.parameters())


def test_a_budget_too_small_for_a_head_is_refused():
    with pytest.raises(ValueError, match="budget"):
        HeadControl(toy(), "logits", budget=100)
    with pytest.raises(ValueError, match="needs at least"):
        HeadControl(toy(), "residual-head", budget=3000)
    with pytest.raises(ValueError, match="allowed: vector-scaling"):
        HeadControl(toy(), "temperature")


def test_every_head_starts_as_the_baseline_and_trains_only_itself():
    backbone = toy()
    x = torch.rand(8, 1, 32, 32)
    frozen = {k: v.clone() for k, v in backbone.state_dict().items()}
    for kind in HEADS:
        head = HeadControl(backbone, kind, budget=20_000)
        torch.testing.assert_close(head(x), backbone(x))
        opt = torch.optim.Adam(head.head_parameters(), lr=0.1)
        head.train()
        assert not backbone.training  # dropout stays off in the frozen backbone
        torch.nn.functional.cross_entropy(head(x), torch.arange(8) % 10).backward()
        opt.step()
        assert not torch.allclose(head(x), backbone(x))  # the head moved ...
    for k, v in backbone.state_dict().items():  # ... and the backbone did not
        torch.testing.assert_close(v, frozen[k])


def test_more_training_trains_a_copy_of_the_whole_backbone():
    backbone = toy()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    copied = trained_on(backbone)
    assert all(p.requires_grad for p in copied.parameters()) and copied.training
    x = torch.rand(8, 1, 32, 32)
    opt = torch.optim.Adam(copied.parameters(), lr=0.01)
    torch.nn.functional.cross_entropy(copied(x), torch.arange(8) % 10).backward()
    opt.step()
    assert not torch.equal(copied.fc1.weight, backbone.fc1.weight)
    for k, v in backbone.state_dict().items():
        torch.testing.assert_close(v, before[k])


@pytest.mark.slow
def test_controls_stage_compares_each_control_with_gattanet_seed_by_seed(project):
    runner = CliRunner()
    for args in (["pretrain", "toy-fmnist"], ["train-attn", "toy-fmnist-d16"], ["controls", "toy-fmnist-d16"]):
        r = runner.invoke(app, ["stage", *args])
        assert r.exit_code == 0, r.output
    out = json.loads((project / "results/controls/toy-fmnist-d16.json").read_text())
    trained = json.loads((project / "results/train-attn/toy-fmnist-d16/metrics.json").read_text())
    assert out["seeds"] == trained["seeds"] and out["test_images"] == trained["test_images"]
    assert out["gattanet_params"] == trained["attention_params"]
    assert out["baseline_acc"] == trained["baseline_acc"]
    assert out["gattanet_acc"] == pytest.approx(trained["gattanet_acc"], abs=1e-12)
    rows = {r["method"]: r for r in out["controls"]}
    assert list(rows) == ["more-training", "vector-scaling", "logits", "residual-head"]
    assert rows["more-training"]["trainable_params"] == trained["backbone_params"]
    for name, row in rows.items():
        if row["kind"] == "head":
            assert row["trainable_params"] <= out["gattanet_params"], name
        # GAttANet − control and control − baseline add up to GAttANet's own gain, image by image
        assert row["vs_gattanet"]["mean"] + row["gain"]["mean"] == pytest.approx(out["gattanet_gain"]["mean"])
        assert row["vs_gattanet"]["low"] <= row["vs_gattanet"]["mean"] <= row["vs_gattanet"]["high"]
        assert row["vs_gattanet"]["paired"] and row["vs_gattanet"]["seeds"] == [2, 2] and len(row["epochs_run"]) == 2
    assert not list((project / ".gattanet/resume").glob("controls-*.pt"))
    r = runner.invoke(app, ["stage", "controls", "toy-fmnist-d4"])
    assert r.exit_code != 0 and "controls: no entry 'toy-fmnist-d4'" in r.output


# ---------------------------------------------------------------- the claim's rule, on synthetic outputs

def write_fake_controls(root, params, key: str, control_gains: dict[str, float]) -> dict:
    """TEST DATA ONLY: every stage output (tests/report_fixtures.py) plus results/controls/KEY.json whose controls
    have the given clean gains over the baseline, computed from per-image correctness as the stage computes it."""
    from gattanet.analysis.stats import effect_ci
    from gattanet.io import write_json
    from tests.report_fixtures import _seeds, write_fake_outputs

    arrays = write_fake_outputs(root, params)
    att = params["attention"][key]
    base, full = arrays["baseline"][att["backbone"]][0].astype(float), arrays["gattanet"][key][:, 0]
    rng = np.random.default_rng(1)
    rows = []
    for method, g in control_gains.items():
        ctl = _seeds(rng, base.astype(bool), g)
        rows.append({"method": method, "kind": "training" if method == "more-training" else "head",
                     "trainable_params": 20, "rank": None, "accuracy": float(ctl.mean()),
                     "per_seed": ctl.mean(axis=1).tolist(), "gain": effect_ci([(1.0, ctl - base)]).as_dict(),
                     "vs_gattanet": effect_ci([(1.0, full), (-1.0, ctl)], paired=True).as_dict(), "epochs_run": [1, 1, 1],
                     "best_epoch": [1, 1, 1], "val_acc": [0.9, 0.9, 0.9]})
    write_json(root / "results" / "controls" / f"{key}.json", {
        "run": key, "backbone_run": att["backbone"], "arch": "toy", "dataset": att["dataset"],
        "attn_dim": att["attn_dim"], "seeds": att["seeds"], "test_images": len(base), "gattanet_params": 15781,
        "epochs": 1, "patience": 1, "train_subset": 0, "baseline_acc": float(base.mean()),
        "gattanet_acc": float(full.mean()), "gattanet_gain": effect_ci([(1.0, full - base)]).as_dict(),
        "controls": rows, "precision": "fp32", "seconds": 3.0, "device": "cpu"})
    return arrays


def controls_claim(root, params):
    from pipeline.config import validate
    from pipeline.report.analysis_plan import load_plan
    from pipeline.report.claims import controls
    from pipeline.report.load import load_paper
    from tests.report_fixtures import loaded

    return controls(loaded(params, root), load_paper(), validate(params), load_plan())


def with_controls(key: str = "toy-fmnist-d16") -> dict:
    from tests.report_fixtures import fake_params

    params = fake_params()
    params["controls"] = {key: {"backbone": "toy-fmnist", "dataset": "fashion-mnist",
                                "methods": ["more-training", "logits", "vector-scaling"], "test_subset": 0}}
    return params


def test_the_control_claim_is_supported_equal_or_contradicted_as_gattanet_is_above_level_or_below(tmp_path):
    from gattanet.analysis.stats import CONTRADICTED, INCONCLUSIVE, NOT_RUN, SUPPORTED
    from pipeline.config import validate

    params = with_controls()
    validate(params)  # the fixture is a valid params file, controls section included
    arrays = write_fake_controls(tmp_path, params, "toy-fmnist-d16",
                                 {"more-training": -0.02, "logits": 0.02, "vector-scaling": 0.06})
    assert arrays["gains"]["toy-fmnist-d16"] == pytest.approx(0.02)  # GAttANet's own gain
    claim = controls_claim(tmp_path, params)
    by = {e.row: e for e in claim.evidence}
    assert by["toy-fmnist-d16: vs more-training"].verdict == SUPPORTED  # GAttANet above the control
    level = by["toy-fmnist-d16: vs logits"]  # the same gain: nothing to tell them apart
    assert level.verdict == INCONCLUSIVE and level.effect.low < 0 < level.effect.high
    assert f"±{100 * level.effect.detectable_80:.2f} pts" in level.note  # what the run could have detected
    assert by["toy-fmnist-d16: vs vector-scaling"].verdict == CONTRADICTED  # the control beats GAttANet
    for e in [e for name, e in by.items() if ": vs " in name]:  # each control's own gain shown beside the verdict
        assert "control's gain over the baseline" in e.numbers and "GAttANet's gain over the baseline" in e.numbers
    capacity = by["capacity: wider toy CNN"]  # the fixture ran wider-toy among the baselines: shown, not paired
    assert capacity.verdict not in (SUPPORTED, CONTRADICTED, INCONCLUSIVE)
    assert claim.overall == {"toy": CONTRADICTED}  # a conjunction: the control that beats GAttANet contradicts it

    (tmp_path / "results/controls/toy-fmnist-d16.json").unlink()
    missing = {e.row: e for e in controls_claim(tmp_path, params).evidence}["toy-fmnist-d16"]
    assert missing.verdict == NOT_RUN and missing.note == "dvc repro controls@toy-fmnist-d16"


def test_the_report_draws_the_backbone_curve_says_whether_it_converged_and_shows_the_controls(tmp_path):
    from pipeline.curves import write_curves
    from tests.report_fixtures import render_report

    params = with_controls()
    params["backbones"]["toy-fmnist"]["patience"] = 2
    write_fake_controls(tmp_path, params, "toy-fmnist-d16", {"more-training": 0.0, "logits": 0.01,
                                                            "vector-scaling": 0.0})
    def curve(val: list[float]):
        write_curves(tmp_path / "results/pretrain/toy-fmnist/live", {"": [
            {"epoch": i + 1, "train_loss": 0.5, "train_acc": v, "val_loss": 0.4, "val_acc": v, "seconds": 1.0}
            for i, v in enumerate(val)]})
        return render_report(params, tmp_path, tmp_path / "reports", {
            "commit": "x", "date": "d", "devices": [], "versions": {}, "stages": [], "params_yaml": ""}).read_text()

    html = curve([0.80, 0.85, 0.86, 0.85, 0.855])  # best at epoch 3 of 5: two epochs without improvement
    assert 'id="controls"' in html and "figures/backbone-toy-fmnist.svg" in html
    assert "converged: no improvement over the last 2 epochs (patience 2)" in html
    assert "figures/controls-toy-fmnist-d16.png" in html and (tmp_path / "reports/figures/controls-toy-fmnist-d16.svg").exists()
    assert "The gain is attention&#39;s, not extra training&#39;s" in html or "The gain is attention's" in html
    html = curve([0.80, 0.85, 0.86, 0.87])  # still rising when the epoch cap ended it
    assert "not converged: the best validation accuracy came at epoch 4 of 4" in html


def test_the_default_profile_trains_to_early_stopping_and_runs_every_control():
    """Issue 19's floor: the backbone and the attention runs on the whole training split, each ended by early
    stopping with room under its epochs cap; the d = 16 run's controls, all of them, on every test image; the
    full profile the same for every toy attention run, and every profile valid with its controls."""
    from pipeline.config import CONTROL_METHODS, validate
    from pipeline.profiles import compose

    p = validate(compose("default"))
    bb = p.backbones["toy-fmnist"]
    assert bb.train_subset == 0 and bb.epochs >= 3 * bb.patience
    for run in p.attention.values():
        assert run.train_subset == 0 and run.epochs > run.patience + 1 and len(run.seeds) >= 3
    assert p.controls["toy-fmnist-d16"].methods == CONTROL_METHODS and p.controls["toy-fmnist-d16"].test_subset == 0
    full = validate(compose("full"))
    assert {k for k, r in full.attention.items() if full.backbones[r.backbone].arch == "toy" and r.attn_dim >= 16} \
        <= set(full.controls)
    for name in ("tiny", "paper"):
        assert validate(compose(name)).controls


def test_bad_controls_params_are_refused_in_one_line(tiny_params):
    from pipeline.config import validate
    from pipeline.errors import ParamsError
    from tests.helpers import with_param

    with pytest.raises(ParamsError, match=r"controls.toy-fmnist-d16.methods\[0\]: 'temperature' is not allowed; "
                                          "allowed: more-training, vector-scaling, logits, residual-head"):
        validate(with_param(tiny_params, "controls.toy-fmnist-d16.methods", ["temperature"]))
    with pytest.raises(ParamsError, match="each control once"):
        validate(with_param(tiny_params, "controls.toy-fmnist-d16.methods", ["logits", "logits"]))
    bad = with_param(tiny_params, "controls.nope", {"backbone": "toy-fmnist", "dataset": "fashion-mnist",
                                                    "methods": ["logits"], "test_subset": 0})
    with pytest.raises(ParamsError, match="controls \\(an attention run\\): 'nope' is not allowed"):
        validate(bad)
    with pytest.raises(ParamsError, match="controls.toy-fmnist-d16.backbone: 'other' must match"):
        validate(with_param(tiny_params, "controls.toy-fmnist-d16.backbone", "other"))


@pytest.mark.slow
def test_every_control_runs_through_dvc_repro_on_the_tiny_profile(tiny_run):
    """The shared tiny-profile `dvc repro` (tests/conftest.py) ran controls@KEY for every entry of `controls`,
    and the report shows their claim, table and the backbone's validation curve."""
    import yaml

    repo = tiny_run["repo"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["controls"]
    for key, cfg in params["controls"].items():
        out = json.loads((repo / "results/controls" / f"{key}.json").read_text())
        assert [r["method"] for r in out["controls"]] == cfg["methods"]
        assert out["seeds"] == params["attention"][key]["seeds"]
        assert all(r["trainable_params"] <= out["gattanet_params"] for r in out["controls"] if r["kind"] == "head")
    html = (repo / "reports/index.html").read_text()
    assert 'id="claim-controls"' in html and 'id="controls"' in html
    assert (repo / "reports/figures/backbone-toy-fmnist.svg").exists()
    status = sh(["dvc", "status"], repo).stdout
    assert "controls@" not in status  # up to date after the run
