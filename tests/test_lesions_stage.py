"""lesions@KEY on the tiny profile, both modes: eval switches layers off in the trained models,
retrain trains a new attention system per pattern and seed."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.stages import lesions
from pipeline.stages.train_attn import train

runner = CliRunner()


def stage(*args: str) -> None:
    r = runner.invoke(app, ["stage", *args])
    assert r.exit_code == 0, r.output


def test_eval_and_retrain_modes(project, monkeypatch):
    stage("pretrain", "toy-fmnist")
    stage("train-attn", "toy-fmnist-d16")
    stage("lesions", "toy-fmnist-d16")
    out = project / "results/lesions/toy-fmnist-d16.json"
    ev = json.loads(out.read_text())
    trained = json.loads((project / "results/train-attn/toy-fmnist-d16/metrics.json").read_text())
    assert ev["mode"] == "eval" and ev["taps"] == ["conv1", "conv2", "conv3", "fc1", "logits"]
    assert ev["seeds"] == trained["seeds"] == [0, 1] and ev["test_images"] == trained["test_images"]
    # the shared first pass gives the numbers train-attn measured with the models' own forwards
    assert ev["baseline_acc"] == trained["baseline_acc"]
    assert ev["full_acc"] == pytest.approx(trained["gattanet_acc"], abs=1e-12)
    by = {p["pattern"]: p for p in ev["patterns"]}
    assert by["cccdd"]["vs_baseline"]["mean"] == pytest.approx(trained["gain"]["mean"], abs=1e-12)
    assert by["....."]["vs_baseline"]["mean"] == 0 and by["cccdd"]["vs_full"]["mean"] == 0
    for p in ev["patterns"]:  # every difference carries a CI over the seeds and the test images
        assert p["vs_full"]["low"] <= p["vs_full"]["mean"] <= p["vs_full"]["high"]
        assert p["vs_baseline"]["seeds"] == [2] and p["vs_baseline"]["images"] == ev["test_images"]

    trained_under = []

    def spy(*args, lesion=None, **kw):
        trained_under.append(lesion)
        return train(*args, lesion=lesion, **kw)

    monkeypatch.setattr(lesions, "train", spy)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["lesions"]["toy-fmnist-d16"]["mode"] = "retrain"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    stage("lesions", "toy-fmnist-d16")
    re = json.loads(out.read_text())
    assert re["mode"] == "retrain" and [p["pattern"] for p in re["patterns"]] == [p["pattern"] for p in ev["patterns"]]
    by = {p["pattern"]: p["accuracy"] for p in re["patterns"]}
    # '.....' is the backbone and 'cccdd' the run's own models; every other pattern is trained for each seed
    assert by["....."] == trained["baseline_acc"] and by["cccdd"] == pytest.approx(trained["gattanet_acc"], abs=1e-12)
    assert trained_under == [p["pattern"] for p in ev["patterns"] if p["kind"] not in ("none", "full")
                             for _ in (0, 1)]
    assert not list((project / ".gattanet/resume").glob("*.pt"))
