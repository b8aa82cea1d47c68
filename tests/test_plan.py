"""`gattanet-cli plan`: the work every stage does, counted as the stages count it (checked against a hand
count from the params), its time from measured rates, the figures file, and the CLI's errors and JSON."""

import json
import os
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from gattanet.cost import rates as cost
from gattanet.cost.rates import ModelSpec, Probe
from gattanet.models.spec import AttentionSpec
from pipeline.cli import app
from pipeline.config import SCRATCH_TRACK, load_params
from pipeline.plan import STANDARD_SIZES, build_works, entries, make_plan
from pipeline.stages import STAGES

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
REAL_BUSY_CPU_SECONDS = cost.busy_cpu_seconds


@pytest.fixture(autouse=True)
def no_other_load(monkeypatch):
    """The test suite's other process shares the cores: plans measured here are judged as if alone, except where a
    test sets the load itself."""
    monkeypatch.setattr(cost, "busy_cpu_seconds", lambda: None)


TOY_PATTERNS = 2 + 2 * 5  # Fig. 4c: none, full, each of the toy's 5 taps ablated, each alone


def _params(tmp_path, raw: dict):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, load_params(path)


def _items(works, stage, entry):
    return [w for w in works if w.stage == stage and w.entry == entry]


def test_tiny_profile_work_matches_a_hand_count(tmp_path, monkeypatch, tiny_params):
    monkeypatch.chdir(tmp_path)  # no data/ here: the standard sizes
    _, p = _params(tmp_path, tiny_params)
    works, sizes = build_works(p)
    raw = tiny_params
    n_all, n_test = STANDARD_SIZES["fashion-mnist"]
    n_val = round(n_all * raw["data"]["fashion-mnist"]["val_fraction"])
    n_train = n_all - n_val
    assert (sizes["fashion-mnist"].train, sizes["fashion-mnist"].val, sizes["fashion-mnist"].test) == (n_train, n_val, n_test)
    sub = lambda k, n: n if k == 0 or k >= n else k  # noqa: E731

    bb = raw["backbones"]["toy-fmnist"]
    pre = _items(works, "pretrain", "toy-fmnist")
    assert [(w.probe.mode, w.images) for w in pre] == [
        ("train", sub(bb["train_subset"], n_train) * bb["epochs"]), ("eval", n_val * bb["epochs"]), ("eval", n_test)]
    assert pre[0].probe.batch == bb["batch_size"] and pre[1].probe.batch == raw["eval_batch_size"]
    least = min(bb["epochs"], 1 + bb["patience"]) / bb["epochs"]  # early stopping's earliest stop
    assert pre[0].least == pre[1].least == least and pre[2].least == 1

    for key, run in raw["attention"].items():
        seeds = len(run["seeds"])
        ta = _items(works, "train-attn", key)
        assert [(w.probe.mode, w.images) for w in ta] == [
            ("train", seeds * sub(run["train_subset"], n_train) * run["epochs"]),
            ("eval", seeds * n_val * run["epochs"]), ("shared", n_test)]
        assert ta[0].probe.batch == run["batch_size"] and ta[0].probe.model.attn.dim == run["attn_dim"]
        assert [w.image_passes for w in ta] == [2 * ta[0].images, 2 * ta[1].images, (1 + seeds) * n_test]
        noise = raw["noise"]
        (nz,) = _items(works, "noise", key)
        assert nz.images == len(noise["sigmas"]) * sub(noise["test_subset"], n_test)
        assert (nz.probe.batch, nz.probe.n, nz.image_passes) == (noise["batch_size"], seeds, nz.images * (1 + seeds))
        em, pca = _items(works, "embed", key)  # the queries; the backbone over the PCA control's fit images
        mp, *samples = _items(works, "maps", key)  # the scores; the sample maps through GAttANet and backbone
        assert (em.images, em.image_passes) == (n_test, n_test)
        assert pca.probe.mode == "eval" and pca.probe.model.kind == "backbone" and pca.images <= n_train
        assert mp.images == sub(raw["maps"]["test_subset"], n_test)
        n_samples = min(raw["maps"]["per_class"] * 10, raw["maps"]["max_images"])
        assert [(w.probe.model.kind, w.images) for w in samples] == [("gattanet", n_samples), ("backbone", n_samples)]

    for key, les in raw["lesions"].items():
        seeds = len(raw["attention"][key]["seeds"])
        (lw,) = _items(works, "lesions", key)
        assert lw.images == sub(les["test_subset"], n_test)
        assert lw.image_passes == lw.images * (1 + seeds * TOY_PATTERNS)  # own pattern + 11 non-empty ones

    b = raw["baselines"]
    run = raw["attention"][b["run"]]
    seeds = len(run["seeds"])
    for method in b["methods"]:
        train, val, sweep, *check = _items(works, "baselines", method)
        scratch = method in SCRATCH_TRACK  # trained like the backbone
        epochs = bb["epochs"] if scratch else b["epochs"]
        subset = bb["train_subset"] if scratch else b["train_subset"]
        assert train.images == seeds * sub(subset, n_train) * epochs
        assert val.images == seeds * n_val * epochs
        assert sweep.images == len(raw["noise"]["sigmas"]) * sub(b["test_subset"], n_test)
        assert len(check) == 4
    stages = [w.stage for w in works]
    assert stages[0] == "validate" and stages[-2:] == ["summary", "report"] and "dims" in stages


def test_sizes_come_from_the_materialised_data_file(project, tiny_params):
    p = load_params("params.yaml")
    works, sizes = build_works(p)
    s = sizes["fashion-mnist"]
    val = round(200 * tiny_params["data"]["fashion-mnist"]["val_fraction"])  # the project fixture: 200 + 100
    assert (s.train, s.val, s.test, s.source) == (200 - val, val, 100, "data/fashion-mnist.pt")
    (test,) = [w for w in _items(works, "pretrain", "toy-fmnist") if w.what.startswith("test")]
    assert test.images == 100


def test_retrain_lesions_count_every_pattern_and_seed(tmp_path, monkeypatch, tiny_params):
    monkeypatch.chdir(tmp_path)
    tiny_params["lesions"]["toy-fmnist-d16"]["mode"] = "retrain"
    _, p = _params(tmp_path, tiny_params)
    works, sizes = build_works(p)
    run = tiny_params["attention"]["toy-fmnist-d16"]
    seeds, retrained = len(run["seeds"]), TOY_PATTERNS - 2
    train, val, test = _items(works, "lesions", "toy-fmnist-d16")
    assert train.images == retrained * seeds * run["train_subset"] * run["epochs"]
    assert val.images == retrained * seeds * sizes["fashion-mnist"].val * run["epochs"]
    assert test.image_passes == test.images * (1 + seeds * (retrained + 1))


def test_passes_per_image():
    toy = ModelSpec("toy", 3, 32, 10)
    g = ModelSpec("toy", 3, 32, 10, "gattanet", AttentionSpec(16))
    assert Probe("train", toy, 8).passes == 1 and Probe("train", g, 8).passes == 2
    assert Probe("shared", g, 8, n=3).passes == 4 and Probe("states", g, 8, n=3).passes == 1
    assert Probe("shared-lesions", g, 8, n=3).passes == 1 + 3 * TOY_PATTERNS
    assert Probe("separate", g, 8, n=3).passes == 7
    assert Probe("separate", ModelSpec("toy", 3, 32, 10, "se", AttentionSpec(16)), 8, n=3).passes == 4
    with pytest.raises(ValueError, match="mode"):
        Probe("fly", toy, 8)
    with pytest.raises(ValueError, match="GAttANets"):
        Probe("shared", toy, 8)


def test_estimate_divides_images_by_rates():
    g = ModelSpec("toy", 3, 32, 10, "gattanet", AttentionSpec(16))
    works = [cost.Work("noise", "k", "a", 1000, Probe("shared", g, 100, n=2)),
             cost.Work("noise", "k", "b", 600, Probe("eval", g, 100)),
             cost.Work("dims", None, "no model", 0)]
    rates = {works[0].probe.key: 500.0}
    rows = cost.estimate_seconds(works, lambda p: {"img_per_s": rates[p.key]} if p.key in rates else None)
    assert rows[0]["seconds"] == pytest.approx(2.0) and rows[0]["image_passes"] == 3000
    assert rows[1]["seconds"] is None and rows[1]["why_not"] == "not measured"
    assert rows[2]["seconds"] is None and rows[2]["probe"] is None
    stops = cost.estimate_seconds([cost.Work("pretrain", "k", "a", 1000, works[0].probe, least=0.25)], lambda p: {"img_per_s": 500.0})
    assert stops[0]["bound"] and stops[0]["min_seconds"] == pytest.approx(0.5) and stops[0]["min_images"] == 250
    sharded = [cost.Work("train-attn", "k", "a", 1000, works[0].probe, sharded=True), works[0]]
    rows = cost.estimate_seconds(sharded, lambda p: {"img_per_s": 500.0}, processes=4)
    assert [r["seconds"] for r in rows] == [pytest.approx(0.5), pytest.approx(2.0)]  # validation is not sharded


def test_nproc_on_the_cpu_assumes_no_speedup(tmp_path, monkeypatch, tiny_params):
    monkeypatch.chdir(tmp_path)
    tiny_params["nproc"] = 2
    tiny_params["device"] = "cpu"
    _, p = _params(tmp_path, _small(tiny_params))
    works, _ = build_works(p)
    figs = cost.Figures(cost.machine_info("cpu"))
    for probe in cost.probes_of(works):
        for prec in ("fp32", "bf16"):
            figs.put("cpu", prec, probe, {"img_per_s": 100.0, "batch": probe.batch})
    cost.save_figures(tmp_path / "f.json", figs)
    plan = make_plan(p, "params.yaml", figures_path=tmp_path / "f.json", measure=False)
    assert plan["total_seconds"] == pytest.approx(sum(w.images for w in works if w.probe) / 100.0)
    assert any("no speed-up" in n for n in plan["notes"])


@pytest.mark.parametrize("probe", [
    Probe("train", ModelSpec("toy", 1, 32, 10, "gattanet", AttentionSpec(4)), 16, l2=1e-5),
    Probe("shared-lesions", ModelSpec("toy", 1, 32, 10, "gattanet", AttentionSpec(4)), 16, n=2),
    Probe("shared-retrained", ModelSpec("toy", 1, 32, 10, "gattanet", AttentionSpec(4)), 16, n=1),
    Probe("separate", ModelSpec("toy", 1, 32, 10, "se", AttentionSpec(4)), 16, n=1),
    Probe("eval", ModelSpec("toy", 1, 32, 10, "wider-toy", AttentionSpec(4)), 16),
], ids=lambda p: f"{p.mode}-{p.model.kind}")
def test_measure_gives_a_rate_at_a_stated_batch(probe):
    r = cost.measure(probe, "cpu", amp=False, seconds=0.2)
    assert r["img_per_s"] > 0 and 1 <= r["batch"] <= probe.batch and r["requested_batch"] == probe.batch
    assert r["calls"] >= 1 and "measured" in r


def _small(raw: dict) -> dict:
    """The tiny profile cut to one attention run, no lesions, no baselines: few kinds of pass."""
    raw["attention"] = {"toy-fmnist-d16": raw["attention"]["toy-fmnist-d16"]}
    raw["lesions"] = {}
    raw["report"]["figures"] = {k: "toy-fmnist-d16" for k in raw["report"]["figures"]}
    raw["baselines"]["methods"] = []
    return raw


def test_bench_saves_figures_that_plan_reads(tmp_path, monkeypatch, tiny_params):
    monkeypatch.chdir(tmp_path)
    path, p = _params(tmp_path, _small(tiny_params))
    fig = tmp_path / "figs.json"
    r = runner.invoke(app, ["bench", "--plan", "--params", str(path), "--probe-seconds", "0.1", "--save",
                            "--figures", str(fig), "--json"])
    assert r.exit_code == 0, r.output
    saved = json.loads(fig.read_text())
    assert saved["format"] == cost.FIGURES_FORMAT and saved["machine"]["cpu_count"] and saved["saved"]
    assert len(saved["figures"]) == len(cost.probes_of(build_works(p)[0]))

    r = runner.invoke(app, ["plan", "--params", str(path), "--figures", str(fig), "--no-measure", "--json"])
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert plan["complete"] and plan["estimate"] and plan["figures"]["used"]
    assert plan["figures"]["measured_now"] == 0 and plan["figures"]["from_file"] == len(saved["figures"])
    assert set(plan["figures"]["smaller_batch"]) == {i["probe"] for i in plan["items"]
                                                     if i["probe"] and i["measured_batch"] < i["batch"]}
    total = sum(i["images"] / i["img_per_s"] for i in plan["items"] if i["probe"])
    assert plan["total_seconds"] == pytest.approx(total)
    assert plan["min_total_seconds"] == pytest.approx(sum(i["min_seconds"] for i in plan["items"] if i["probe"]))
    assert {r["stage"] for r in plan["rows"]} == {name for name in STAGES if entries(p, name)}  # with entries
    assert {"validate", "data", "pretrain", "train-attn", "noise", "embed", "maps"} <= {r["stage"] for r in plan["rows"]}
    for row in plan["rows"]:
        assert set(row) >= {"stage", "entry", "work", "image_passes", "seconds", "complete", "bound"}
        assert (row["seconds"] is None) == (not row["model_work"])

    r = runner.invoke(app, ["plan", "--params", str(path), "--figures", str(fig), "--no-measure"])
    text = " ".join(r.stdout.split())
    assert r.exit_code == 0 and "an estimate" in text and "total" in text
    assert str(fig) in "".join(r.stdout.split())  # where the rates come from (rich may wrap the path)


def test_plan_and_bench_answer_help():
    for command in (["plan"], ["bench"]):
        r = runner.invoke(app, command + ["--help"])
        assert r.exit_code == 0 and "--figures" in r.output and "--params" in r.output


def test_plan_without_figures_says_not_measured(tmp_path, monkeypatch, tiny_params):
    monkeypatch.chdir(tmp_path)
    path, p = _params(tmp_path, _small(tiny_params))
    r = runner.invoke(app, ["plan", "--params", str(path), "--figures", "absent.json", "--no-measure", "--json"])
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert not plan["complete"] and plan["total_seconds"] == 0
    assert plan["not_measured"] == sum(1 for w in build_works(p)[0] if w.probe is not None)
    assert all(i["why_not"] == "not measured" for i in plan["items"] if i["probe"])
    r = runner.invoke(app, ["plan", "--params", str(path), "--figures", "absent.json", "--no-measure"])
    text = " ".join(r.stdout.split())
    assert r.exit_code == 0 and "not measured" in text and "no figures file" in text


def test_figures_of_another_machine_are_not_used(tmp_path, monkeypatch, tiny_params):
    monkeypatch.chdir(tmp_path)
    _, p = _params(tmp_path, _small(tiny_params))
    works, _ = build_works(p)
    machine = cost.machine_info("cpu") | {"cpu": "some other CPU"}
    figs = cost.Figures(machine)
    for probe in cost.probes_of(works):
        figs.put("cpu", "fp32", probe, {"img_per_s": 1000.0, "batch": probe.batch})
        figs.put("cpu", "bf16", probe, {"img_per_s": 1000.0, "batch": probe.batch})
    cost.save_figures(tmp_path / "f.json", figs)
    plan = make_plan(p, "params.yaml", figures_path=tmp_path / "f.json", measure=False)
    assert not plan["figures"]["used"] and "another machine" in plan["figures"]["note"]
    assert not plan["complete"]
    cost.save_figures(tmp_path / "f.json", cost.Figures(cost.machine_info("cpu"), figs.rates))
    plan = make_plan(p, "params.yaml", figures_path=tmp_path / "f.json", measure=False)
    assert plan["figures"]["used"] and plan["complete"]
    assert plan["total_seconds"] == pytest.approx(sum(w.images for w in works if w.probe) / 1000.0)


def test_plan_measures_what_is_missing_and_saves_it(tmp_path, monkeypatch, tiny_params):
    monkeypatch.chdir(tmp_path)
    _, p = _params(tmp_path, _small(tiny_params))
    plan = make_plan(p, "params.yaml", figures_path=tmp_path / "f.json", probe_seconds=0.05, save=True)
    assert plan["complete"] and plan["figures"]["measured_now"] == len(cost.probes_of(build_works(p)[0]))
    assert all(i["rate_source"] == "measured now" for i in plan["items"] if i["probe"])
    again = make_plan(p, "params.yaml", figures_path=tmp_path / "f.json", measure=False)
    assert again["complete"] and again["figures"]["measured_now"] == 0
    assert again["total_seconds"] == pytest.approx(plan["total_seconds"])


def test_rates_measured_while_other_processes_use_the_cores_are_flagged_and_not_saved(tmp_path, monkeypatch,
                                                                                     tiny_params):
    """A timing taken while another job shares the cores is not this machine's: the plan says so, and `--save` keeps
    such rates out of the figures file (a later plan would reuse them). Without other load they are saved."""
    monkeypatch.chdir(tmp_path)
    _, p = _params(tmp_path, _small(tiny_params))
    for others, saved in ((1e6, False), (0.0, True)):  # CPU seconds others spend during the measuring
        readings = iter([(100.0, 1.0), (100.0 + others + 5.0, 6.0)])  # this process's own 5 s are not others'
        monkeypatch.setattr(cost, "busy_cpu_seconds", lambda: next(readings))
        figures = tmp_path / f"f-{saved}.json"
        plan = make_plan(p, "params.yaml", figures_path=figures, probe_seconds=0.05, save=True)
        flagged = [n for n in plan["notes"] if "other processes used" in n]
        assert plan["figures"]["saved_now"] is saved and figures.exists() is saved
        assert bool(flagged) is not saved and (plan["figures"]["other_cores"] > cost.CONTENDED_CORES) is not saved
        if flagged:
            assert "not saved" in flagged[0]


def test_other_processes_cpu_use_is_read_from_the_kernel():
    """busy_cpu_seconds reads real counters: this process's own work is counted in both, so it is not 'other'."""
    before = REAL_BUSY_CPU_SECONDS()
    assert before is not None and 0 < before[1] <= before[0]
    t0, cpu0 = time.perf_counter(), time.process_time()
    while time.process_time() - cpu0 < 0.3 and time.perf_counter() - t0 < 60:  # 0.3 s of this process's CPU time
        pass
    after = REAL_BUSY_CPU_SECONDS()
    assert after[1] - before[1] >= 0.25  # counted in clock ticks
    assert after[0] - before[0] >= 0.25
    assert cost.other_cores(before, after, time.perf_counter() - t0) >= 0.0
    assert cost.other_cores((10.0, 1.0), (14.0, 2.0), 2.0) == pytest.approx(1.5)
    assert cost.other_cores((10.0, 1.0), (10.5, 2.0), 1.0) == 0.0  # counters of different granularity
    assert cost.other_cores(None, after, 1.0) is None and cost.other_cores(before, after, 0.0) is None
    assert REAL_BUSY_CPU_SECONDS(Path("/nonexistent/stat")) is None


def test_corrupt_figures_file_is_one_line_and_exit_1(tmp_path, monkeypatch, tiny_params):
    monkeypatch.chdir(tmp_path)
    path, _ = _params(tmp_path, _small(tiny_params))
    (tmp_path / "f.json").write_text("{not json")
    r = runner.invoke(app, ["plan", "--params", str(path), "--figures", "f.json", "--no-measure"])
    assert r.exit_code == 1 and "not a gattanet figures file" in r.output
    good = {"format": cost.FIGURES_FORMAT, "version": cost.FIGURES_VERSION, "machine": {}, "figures": {}}
    for record in (1, {"img_per_s": "fast"}, {"img_per_s": -3.0}, {}):
        (tmp_path / "f.json").write_text(json.dumps(dict(good, figures={"cpu|fp32|train toy": record})))
        r = runner.invoke(app, ["plan", "--params", str(path), "--figures", "f.json", "--no-measure"])
        assert r.exit_code == 1 and "'cpu|fp32|train toy' is not a record" in r.output, (record, r.output)


def test_bad_params_exit_2_naming_the_key(tmp_path, monkeypatch, tiny_params):
    monkeypatch.chdir(tmp_path)
    tiny_params["noise"]["test_subset"] = -1
    path, _ = (tmp_path / "params.yaml"), (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    r = runner.invoke(app, ["plan", "--params", str(path), "--no-measure"])
    assert r.exit_code == 2 and "noise.test_subset" in r.output
    r = runner.invoke(app, ["plan", "--params", "missing.yaml", "--no-measure"])
    assert r.exit_code == 2 and "missing.yaml" in r.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_in_params_without_cuda_plans_for_the_cpu_and_says_so(tmp_path, monkeypatch, tiny_params):
    monkeypatch.chdir(tmp_path)
    tiny_params["device"] = "cuda"
    path, p = _params(tmp_path, _small(tiny_params))
    plan = make_plan(p, path, figures_path=tmp_path / "none.json", measure=False)
    assert plan["device"] == "cpu" and plan["params_device"] == "cuda"
    assert any("lacks" in n for n in plan["notes"])
    r = runner.invoke(app, ["plan", "--params", str(path), "--device", "cuda", "--no-measure"])
    assert r.exit_code == 2 and "CUDA is not available" in r.output


def test_engine_bench_is_kept_beside_the_figures(tmp_path, monkeypatch, tiny_params):
    from pipeline.cli import _save_engine_bench

    monkeypatch.chdir(tmp_path)
    _, p = _params(tmp_path, _small(tiny_params))
    make_plan(p, "params.yaml", figures_path=tmp_path / "f.json", probe_seconds=0.05, save=True)
    _save_engine_bench({"device": "cpu", "img_per_s": {"fp32": {"pretrain_step": 1.0}}}, tmp_path / "f.json")
    saved = json.loads((tmp_path / "f.json").read_text())
    assert saved["engine"]["img_per_s"]["fp32"]["pretrain_step"] == 1.0 and saved["figures"]  # both kept
    assert make_plan(p, "params.yaml", figures_path=tmp_path / "f.json", measure=False)["complete"]


def test_stale_plans_only_what_dvc_status_lists_and_names_the_cpu_class(tmp_path, monkeypatch, tiny_params):
    """`make repro` prints `plan --stale` first: the entries `dvc status` lists (a stand-in `dvc` on PATH here),
    all of them where DVC cannot say, with the machine's CPU class and precision."""
    monkeypatch.chdir(tmp_path)
    path, _ = _params(tmp_path, _small(tiny_params))
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dvc").write_text('#!/bin/sh\necho \'{"pretrain@toy-fmnist": [], "dims": []}\'\n')
    (fake / "dvc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    r = runner.invoke(app, ["plan", "--params", str(path), "--no-measure", "--stale", "--json"])
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)
    assert {(row["stage"], row["entry"]) for row in plan["rows"]} == {("pretrain", "toy-fmnist"), ("dims", None)}
    assert plan["scope"] == "the stages dvc repro would run now"
    assert plan["machine"]["cpu_class"] in ("AVX512-BF16", "AVX-512", "AVX2", "other")
    r = runner.invoke(app, ["plan", "--params", str(path), "--no-measure", "--stale"])
    assert "CPU class:" in r.output and "would run now" in r.output
    (fake / "dvc").write_text("#!/bin/sh\nexit 1\n")  # DVC cannot say: every stage
    everything = runner.invoke(app, ["plan", "--params", str(path), "--no-measure", "--json"])
    r = runner.invoke(app, ["plan", "--params", str(path), "--no-measure", "--stale", "--json"])
    assert json.loads(r.output)["rows"] == json.loads(everything.output)["rows"]
