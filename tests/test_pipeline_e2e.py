"""The whole pipeline through the real `dvc repro` on the tiny profile, in a temporary copy of the repo."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gattanet.precision import autocast_dtype, precision_name
from tests.conftest import ROOT, make_project, sh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A fresh copy of the project on the tiny profile, after one full `dvc repro`."""
    params = yaml.safe_load((ROOT / "profiles" / "tiny.yaml").read_text())
    repo = make_project(tmp_path_factory.mktemp("e2e"), params)
    sh(["dvc", "repro"], repo)
    return repo


def load(repo: Path, rel: str):
    return json.loads((repo / rel).read_text())


def test_every_stage_output_is_present_and_valid(repo):
    runs = {"toy-fmnist-d4": [0], "toy-fmnist-d16": [0, 1]}
    assert (repo / "data/fashion-mnist.pt").stat().st_size > 0
    pre = load(repo, "results/pretrain/toy-fmnist/metrics.json")
    assert pre["params"] > 0
    # amp: true in the tiny profile: bf16 autocast where this CPU does bf16 natively, else fp32
    want = precision_name(autocast_dtype(torch.device("cpu"), True))
    assert pre["precision"] == want
    for run, seeds in runs.items():
        m = load(repo, f"results/train-attn/{run}/metrics.json")
        assert m["precision"] == want and m["seeds"] == seeds and m["test_images"] == 200
        assert [r["seed"] for r in m["per_seed"]] == seeds and all(len(r["alpha"]) == 5 for r in m["per_seed"])
        assert 0 <= m["baseline_acc"] <= 1 and 0 <= m["gattanet_acc"] <= 1
        assert m["attn_dim"] == int(run.split("-d")[-1])
        gain = m["gain"]
        assert gain["mean"] == pytest.approx(m["gattanet_acc"] - m["baseline_acc"], abs=1e-12)
        assert gain["low"] <= gain["mean"] <= gain["high"] and gain["seeds"] == [len(seeds)]
        assert sorted(p.name for p in (repo / f"models/attention/{run}").iterdir()) == [f"seed-{s}.pt" for s in seeds]
        s = load(repo, f"results/noise/{run}/sweep.json")
        assert s["sigmas"] == [0.0, 0.03, 0.1] and s["peak_sigma"] == 0.03 and len(s["gattanet_per_seed"]) == len(seeds)
        assert s["gain"][0]["mean"] == pytest.approx(gain["mean"], abs=1e-12)  # σ = 0: the clean gain again
        with np.load(repo / f"results/noise/{run}/correct.npz") as z:
            assert z["baseline"].shape == (3, 200) and z["gattanet"].shape == (len(seeds), 3, 200)
        assert (repo / f"results/noise/{run}/curve.csv").read_text().startswith("sigma,")
        e = load(repo, f"results/embedding/{run}/stats.json")
        assert e["n_points"] == 100 and e["test_images"] == 200 and 0 <= e["knn_query"]["mean"] <= 1
        assert len((repo / f"results/embedding/{run}/points.csv").read_text().splitlines()) == 101
        maps = load(repo, f"results/maps/{run}/maps.json")
        assert len(maps["samples"]) == 10 and len(maps["samples"][0]["scores"]) == 5
        assert 0 <= load(repo, f"results/maps/{run}/stats.json")["top3_rate"]["mean"] <= 1
    lesions = load(repo, "results/lesions/toy-fmnist-d16.json")
    assert len(lesions["patterns"]) == 12
    train = load(repo, "results/train-attn/toy-fmnist-d16/metrics.json")
    assert lesions["baseline_acc"] == train["baseline_acc"]
    assert lesions["full_acc"] == pytest.approx(train["gattanet_acc"], abs=1e-12)
    dims = load(repo, "results/dims.json")
    assert [r["attn_dim"] for r in dims["rows"]] == [4, 16]
    assert [(c["d_small"], c["d_large"], c["at"]) for c in dims["comparisons"]] == [(4, 16, "clean"), (4, 16, "peak")]
    summary = load(repo, "reports/summary.json")
    assert {r["attn_dim"] for r in summary["rows"]} == {4, 16}
    assert set(summary["rows"][0]) >= {"backbone", "dataset", "attn_dim", "seeds", "backbone_params",
                                       "attention_params", "baseline_acc", "gattanet_acc", "gain", "gain_ci_low",
                                       "gain_ci_high"}
    for method in ("gattanet", "se", "wider-toy"):
        b = load(repo, f"results/baselines/{method}.json")
        assert b["method"] == method and b["trainable_params"] > 0 and len(b["acc"]) == 3
        assert b["seeds"] == [0, 1] and len(b["epochs_run"]) == 2
    assert load(repo, "results/baselines/gattanet.json")["trainable_params"] == train["attention_params"]
    html = (repo / "reports/index.html").read_text()
    assert "Table 1" in html and "<img" in html and "95 % CI" in html


def test_dvc_tools_work_on_the_outputs(repo):
    assert "up to date" in sh(["dvc", "status"], repo).stdout
    metrics = sh(["dvc", "metrics", "show", "--json"], repo).stdout
    assert "gattanet_acc" in metrics
    sh(["dvc", "plots", "show", "-o", str(repo.parent / "plots")], repo)
    assert (repo.parent / "plots" / "index.html").exists()
    assert "toy-fmnist-d16" in sh(["dvc", "exp", "show", "--json"], repo).stdout
    sh(["dvc", "params", "diff"], repo)


def test_changing_one_dimension_touches_only_its_stages(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["attention"]["toy-fmnist-d4"]["attn_dim"] = 8
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(sh(["dvc", "status", "--json"], repo).stdout)
    assert set(status) == {"train-attn@toy-fmnist-d4", "dims", "summary"}
