"""lesions@KEY on the tiny profile, both modes: eval switches layers off in the trained model,
retrain trains a new attention system per pattern."""

import json

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
    assert ev["baseline_acc"] == trained["baseline_acc"] and ev["full_acc"] == trained["gattanet_acc"]

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
    # '.....' is the backbone, and 'cccdd' retrained with the run's seed and settings is the run's model again
    assert by["....."] == trained["baseline_acc"] and by["cccdd"] == trained["gattanet_acc"]
    assert trained_under == [p["pattern"] for p in ev["patterns"] if p["kind"] != "none"]
    assert not list((project / ".gattanet/resume").glob("*.pt"))
