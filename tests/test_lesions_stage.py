"""lesions@KEY on the tiny profile, both modes: eval switches layers off in the trained models,
retrain trains a new attention system per pattern and seed."""

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.stages import lesions
from pipeline.runs import train_attention

runner = CliRunner()


def stage(*args: str) -> None:
    r = runner.invoke(app, ["stage", *args])
    assert r.exit_code == 0, r.output


@pytest.mark.slow
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
        return train_attention(*args, lesion=lesion, **kw)

    monkeypatch.setattr(lesions, "train_attention", spy)
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


def as_json(obj):
    """What a stage's JSON holds for obj (tuples become lists)."""
    return json.loads(json.dumps(obj))


@pytest.mark.slow
def test_noise_lesions_and_embed_write_the_arrays_their_intervals_are_recomputed_from(project):
    """Each stage's per-image arrays (git-tracked .npz) give back exactly the intervals of its JSON, and the report
    loader reads those intervals from the arrays; the embed stage scores its two query-space controls."""
    from pipeline.config import read_yaml
    from pipeline.recompute import embed_estimates, lesion_estimates, noise_estimates
    from tests.report_fixtures import loaded

    stage("pretrain", "toy-fmnist")
    stage("train-attn", "toy-fmnist-d16")
    for name in ("lesions", "noise", "embed"):
        stage(name, "toy-fmnist-d16")
    res = project / "results"
    with np.load(res / "noise/toy-fmnist-d16/correct.npz") as z:
        sweep = json.loads((res / "noise/toy-fmnist-d16/sweep.json").read_text())
        assert z["baseline"].dtype == bool and z["gattanet"].shape == (2, len(sweep["sigmas"]), sweep["test_images"])
        est = as_json(noise_estimates(z["baseline"], z["gattanet"]))
        assert est == {k: sweep[k] for k in ("gain", "growth_by_sigma")}
    assert sweep["chance"] == 0.1
    assert sweep["growth_by_sigma"][sweep["sigmas"].index(sweep["peak_sigma"])] == sweep["growth"]
    les = json.loads((res / "lesions/toy-fmnist-d16.json").read_text())
    with np.load(res / "lesions/toy-fmnist-d16.npz") as z:
        assert list(z["patterns"]) == [p["pattern"] for p in les["patterns"]]
        assert z["correct"].shape == (len(les["patterns"]), 2, les["test_images"])
        assert as_json(lesion_estimates(z["baseline"], z["correct"], 1)) == [
            {k: p[k] for k in ("vs_baseline", "vs_full", "kept")} for p in les["patterns"]]
    stats = json.loads((res / "embedding/toy-fmnist-d16/stats.json").read_text())
    with np.load(res / "embedding/toy-fmnist-d16/correct.npz") as z:
        arrays = {k: z[k] for k in z.files}
    est = as_json(embed_estimates(arrays))
    assert est["knn_query"] == stats["knn_query"] and set(stats["controls"]) == {"random", "pca"}
    for c, e in est["controls"].items():
        assert {k: stats["controls"][c][k] for k in e} == e
    assert "fc1 features, PCA to d = 16" in stats["controls"]["pca"]["what"]
    assert arrays["random"].shape == arrays["query"].shape == (2, stats["test_images"])  # one projection per seed
    assert arrays["pca"].shape == (1, stats["test_images"])
    params = read_yaml((project / "params.yaml").read_text())
    params["attention"] = {"toy-fmnist-d16": params["attention"]["toy-fmnist-d16"]}
    params["lesions"] = {"toy-fmnist-d16": params["lesions"]["toy-fmnist-d16"]}
    params["report"]["figures"] = {k: v for k, v in params["report"]["figures"].items() if v == "toy-fmnist-d16"}
    out = loaded(params, project)
    assert sorted(out.from_arrays) == ["results/embedding/toy-fmnist-d16/correct.npz",
                                       "results/lesions/toy-fmnist-d16.npz", "results/noise/toy-fmnist-d16/correct.npz"]
