"""The whole pipeline through the real `dvc repro` on the tiny profile, in a temporary copy of the repo."""

import hashlib
import json
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gattanet.engine.precision import autocast_dtype, precision_name
from pipeline.profiles import compose
from tests.helpers import ROOT, sh, with_param

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tiny_run) -> Path:
    """A fresh copy of the project on the tiny profile, after one full `dvc repro` (conftest's tiny_run)."""
    return tiny_run["repo"]


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
    assert [(c["d_small"], c["d_large"], c["at"], c["sigma"]) for c in dims["comparisons"]] == [
        (4, 16, "clean", 0.0), (4, 16, "peak", 0.03), (4, 16, "sweep", 0.1)]  # the report picks the relative σ*
    for path in ("results/noise/toy-fmnist-d16/correct.npz", "results/lesions/toy-fmnist-d4.npz",
                 "results/embedding/toy-fmnist-d16/correct.npz"):  # git-tracked arrays (cache: false)
        assert (repo / path).stat().st_size > 0
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


# Appended to a copy of the plots page: after the vega-embed calls have run, record each plot's
# div, its canvas size, its dark pixels (axes, labels) and its coloured ones (the data marks, legend).
PLOTS_CHECK_SCRIPT = """<script>
window.addEventListener('load', () => setTimeout(() => {
  const plots = [...document.querySelectorAll('div.vega-embed')].map(d => {
    const c = d.querySelector('canvas');
    let ink = 0, colour = 0;
    if (c && c.width && c.height) {
      const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < px.length; i += 4) {
        if (px[i + 3] === 0) continue;
        const [r, g, b] = [px[i], px[i + 1], px[i + 2]];
        if (r + g + b < 600) ink++;
        if (Math.max(r, g, b) - Math.min(r, g, b) > 80) colour++;
      }
    }
    return {id: d.id, canvas: c ? [c.width, c.height] : null, ink, colour};
  });
  document.body.setAttribute('data-check', JSON.stringify({plots, vega: typeof vegaEmbed}));
}, 2000));
</script>"""


def test_dvc_tools_work_on_the_outputs(repo, tmp_path):
    """status, metrics, exp show and params diff answer; `dvc plots show` names exactly the training
    curves (DVCLive's TSVs) and noise CSVs (no warning), uses the checkout's .dvc/config page template (make_project's fresh
    `dvc init` has its own config), and its page loads no script from the network and draws every
    plot in headless Chromium."""
    assert "up to date" in sh(["dvc", "status"], repo).stdout
    metrics = sh(["dvc", "metrics", "show", "--json"], repo).stdout
    assert "gattanet_acc" in metrics
    assert "toy-fmnist-d16" in sh(["dvc", "exp", "show", "--json"], repo).stdout
    sh(["dvc", "params", "diff"], repo)

    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    out = tmp_path / "plots"
    r = sh(["dvc", "plots", "show", "-o", str(out)], repo)
    assert "warning" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
    html = (out / "index.html").read_text()
    assert not re.search(r"""<script[^>]*\bsrc\s*=\s*["']?(https?:)?//""", html, re.I), "a script from the network"
    assert not re.search(r"""<(link|img|iframe)[^>]*\b(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert "vegaEmbed" in html and "cdn.jsdelivr" not in html
    from pipeline.curves import CURVES

    seeds = {"toy-fmnist-d4": (0,), "toy-fmnist-d16": (0, 1)}  # the tiny profile's; DVCLive: a TSV per curve
    want = {f"results_pretrain_toy-fmnist_live_plots_metrics_{c}_tsv" for c in CURVES} | {
        f"results_train-attn_{run}_live_plots_metrics_seed-{s}_{c}_tsv" for run, ss in seeds.items() for s in ss
        for c in CURVES} | {f"results_noise_{run}_curve_csv" for run in seeds}
    tiny = compose("tiny")
    want |= {f"results_extensions_{key}_live_plots_metrics_seed-{s}_{c}_tsv" for key, e in tiny["extensions"].items()
             for s in seeds[e["run"]] for c in CURVES}  # each variant trains its run's seeds

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        pytest.skip("no chromium binary found (looked for chromium, chromium-browser, /usr/bin/chromium)")
    check = out / "_check.html"
    head, _, tail = html.rpartition("</body>")  # the last one: the inlined vega code has the string too
    check.write_text(head + PLOTS_CHECK_SCRIPT + "</body>" + tail)
    res = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000", "--window-size=1280,2000",
         "--dump-dom", check.as_uri()], capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    found = re.search(r'<body[^>]*data-check="([^"]*)"', res.stdout)
    assert found, f"the check script did not run; DOM starts {res.stdout[:300]!r}"
    result = json.loads(unescape(found.group(1)))
    assert result["vega"] == "function", result
    plots = {p["id"]: p for p in result["plots"]}
    assert set(plots) == want, sorted(plots)
    for p in plots.values():  # axes and labels: thousands of dark pixels; the data marks: coloured ones
        assert p["canvas"] and min(p["canvas"]) > 100 and p["ink"] > 2000, p
        # one epoch in the tiny profile: a training curve (one DVCLive TSV) is one point plus the legend's
        # (about 100 coloured pixels); a noise curve is two lines across the three σ (about twice the plot's width)
        assert p["colour"] > (600 if "_noise_" in p["id"] else 60), p


def _snapshot(repo: Path) -> dict[str, str]:
    """sha256 of every file under the folders DVC writes."""
    return {p.relative_to(repo).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for top in ("data", "models", "results", "reports") for p in sorted((repo / top).rglob("*")) if p.is_file()}


# A dozen kinds of bad param, each with what the message must name. Each would send `dvc repro` into a
# stage whose outputs DVC removes first; `validate` must stop it before.
BAD_PARAMS = [
    ("attention.toy-fmnist-d16.attn_dim", 0, "attention.toy-fmnist-d16.attn_dim: must be ≥ 1"),
    ("attention.toy-fmnist-d16.backbone", "nosuch", "attention.toy-fmnist-d16.backbone: 'nosuch' is not allowed"),
    ("attention.toy-fmnist-d16.lr", float("nan"), "attention.toy-fmnist-d16.lr: expected a finite number"),
    ("backbones.toy-fmnist.lr", float("inf"), "backbones.toy-fmnist.lr: expected a finite number"),
    ("noise.sigmas", [0.0, 0.1, 0.03], "noise.sigmas: must start at 0"),
    ("noise.peak_sigma", 0.05, "noise.peak_sigma: 0.05 must be one of noise.sigmas"),
    ("attention.toy-fmnist-d16.seeds", [0, 0], "attention.toy-fmnist-d16.seeds: seeds must be distinct"),
    ("attention.toy-fmnist-d16.lesion", "ccxdd", "attention.toy-fmnist-d16.lesion"),
    ("lesions.toy-fmnist-d16.mode", "prune", "lesions.toy-fmnist-d16.mode: 'prune' is not allowed"),
    ("epochs", 3, "epochs: unknown key"),
    ("attention.toy-fmnist-d4.train_subset", "all", "attention.toy-fmnist-d4.train_subset: expected an integer"),
    ("data.fashion-mnist.root", "/nonexistent/fmnist", "data.fashion-mnist.root: '/nonexistent/fmnist' does not exist"),
    ("baselines.methods", ["se", "vit"], "baselines.methods[1]: 'vit' is not allowed"),
    ("device", "cuda:0" if not torch.cuda.is_available() else "tpu", "device:"),
]


def test_bad_params_stop_dvc_repro_before_anything_is_removed(repo):
    """For each bad param: `dvc repro` exits non-zero with the project's message naming the key, and
    every file under data/, models/, results/ and reports/ is byte-identical afterwards."""
    good_text = (repo / "params.yaml").read_text()
    good = yaml.safe_load(good_text)
    before = _snapshot(repo)
    assert len(before) > 40
    try:
        for dotted, value, message in BAD_PARAMS:
            (repo / "params.yaml").write_text(yaml.safe_dump(with_param(good, dotted, value), sort_keys=False))
            r = sh(["dvc", "repro"], repo, check=False)
            out = r.stdout + r.stderr
            assert r.returncode != 0, f"{dotted}={value!r}: dvc repro passed"
            assert message in out, f"{dotted}={value!r}: {out[-1500:]}"
            assert "Running stage 'validate'" in out and "Running stage 'data" not in out
            assert _snapshot(repo) == before, f"{dotted}={value!r} changed outputs"
    finally:
        (repo / "params.yaml").write_text(good_text)
    assert "up to date" in sh(["dvc", "status"], repo).stdout


def test_an_exponent_lr_is_read_as_dvc_reads_it(repo):
    good_text = (repo / "params.yaml").read_text()
    lr = yaml.safe_load(good_text)["attention"]["toy-fmnist-d16"]["lr"]
    try:
        text = good_text.replace(f"lr: {lr}", f"lr: {lr:.0e}", 1)
        assert float(f"{lr:.0e}") == lr and text != good_text
        (repo / "params.yaml").write_text(text)
        assert "up to date" in sh(["dvc", "status"], repo).stdout  # DVC reads the same number
        assert "params: valid" in sh(["dvc", "repro", "--force", "validate"], repo).stdout  # and so do we
    finally:
        (repo / "params.yaml").write_text(good_text)


def test_editing_a_module_reruns_exactly_the_stages_that_run_it(repo):
    """Append a comment to a library module: `dvc status` lists exactly the stages whose walked
    imports include it (the stages' code deps are checked against the walk in test_stage_deps)."""
    from pipeline.stages import STAGES
    from tests.stage_deps import stage_files

    for module in ("gattanet/analysis/embedding.py", "gattanet/analysis/sweeps.py"):
        path = repo / module
        original = path.read_bytes()
        try:
            path.write_bytes(original + b"\n# touched by the test\n")
            status = set(json.loads(sh(["dvc", "status", "--json"], repo).stdout))
        finally:
            path.write_bytes(original)
        runs = {name for name, stage in STAGES.items() if module in stage_files(stage.module)}
        assert status and {s.split("@")[0] for s in status} == runs, (module, sorted(status), runs)
        assert all(s.split("@")[0] != "validate" for s in status)
    assert "up to date" in sh(["dvc", "status"], repo).stdout


def test_an_identical_retrain_leaves_the_models_consumers_up_to_date(repo):
    """Checkpoints are byte-stable: retraining a run with the same params writes the same bytes, so
    its noise/embed/maps stages stay up to date. (The aggregates rerun: metrics.json and history.csv
    record wall-clock seconds.)"""
    before = _snapshot(repo)
    sh(["dvc", "repro", "--force", "--single-item", "train-attn@toy-fmnist-d4"], repo)
    after = _snapshot(repo)
    assert after["models/attention/toy-fmnist-d4/seed-0.pt"] == before["models/attention/toy-fmnist-d4/seed-0.pt"]
    status = set(json.loads(sh(["dvc", "status", "--json"], repo).stdout))
    assert status <= {"dims", "summary", "report"}, sorted(status)
    sh(["dvc", "repro"], repo)


def test_changing_one_dimension_touches_only_its_stages(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["attention"]["toy-fmnist-d4"]["attn_dim"] = 8
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(sh(["dvc", "status", "--json"], repo).stdout)
    # the run's own stages (its lesions read its params entry) and the aggregates; d16's stay cached
    assert set(status) == {"validate", "train-attn@toy-fmnist-d4", "lesions@toy-fmnist-d4", "dims", "summary"}
