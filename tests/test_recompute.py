"""A report built from a run's per-image arrays gives that run's verdicts: every interval a claim reads is a
function of the git-tracked arrays (pipeline/recompute.py), the stages write their JSON with those functions, and
the report rebuilds every claim's rows, effects and verdicts from the arrays alone, its JSON intervals scrambled.

Checked on a fresh tiny-profile run (every stage a claim reads, d = 16 and d = 64 on one backbone) and on the
default run committed in results/ (per claim; a claim whose arrays that run lacks is skipped, naming them)."""

import json
import shutil

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from pipeline import outputs
from pipeline.config import read_yaml, validate
from tests.helpers import ROOT, scrambled
from tests.report_fixtures import judge, loaded

CLAIMS = ("clean_gain", "gain_size", "noise_visible", "noise", "query_space", "query_learned", "true_class", "lesions",
          "dimension", "controls")


def claim_arrays(params: dict) -> dict[str, list[str]]:
    """Per claim, the per-image archives its intervals are recomputed from (dims: the noise arrays of its runs)."""
    runs, noise = list(params.get("attention") or {}), outputs.NOISE_CORRECT
    return {"clean_gain": [noise.pattern.format(key=k) for k in runs],
            "gain_size": [noise.pattern.format(key=k) for k in runs],
            "noise_visible": [noise.pattern.format(key=k) for k in runs],
            "noise": [noise.pattern.format(key=k) for k in runs],
            "query_space": [outputs.EMBED_CORRECT.pattern.format(key=k) for k in runs],
            "query_learned": [outputs.EMBED_CORRECT.pattern.format(key=k) for k in runs],
            "true_class": [outputs.MAPS_HITS.pattern.format(key=k) for k in runs],
            "lesions": [outputs.LESIONS_CORRECT.pattern.format(key=k) for k in params.get("lesions") or {}],
            "dimension": [noise.pattern.format(key=k) for k in runs] + [outputs.DIMS.pattern],
            "controls": [outputs.CONTROLS_CORRECT.pattern.format(key=k) for k in params.get("controls") or {}]}


STALE = "its contrast at share"  # a row whose contrast (plan v2) the run's JSON predates: decided from the arrays only


def _rows(root, params) -> dict[str, list[tuple]]:
    return {c.id: [(e.row, e.verdict, e.effect) if STALE not in e.note else (e.row, "stale JSON", None)
                   for e in c.evidence]
            for c in judge(params, root)}


def same_or_redecided(arrays: list[tuple], from_json: list[tuple]) -> int:
    """The rows from the arrays are those from the JSON, except rows whose contrast the committed JSON predates (the
    analysis plan v2's): those the arrays decide. Returns how many rows the arrays re-decided that way."""
    assert [r[0] for r in arrays] == [r[0] for r in from_json]
    redecided = 0
    for a, j in zip(arrays, from_json):
        if j[1] == "stale JSON":
            assert a[1] not in ("not run", "stale JSON") and a[2] is not None, a
            redecided += 1
        else:
            assert a == j
    return redecided


def locked_params(lock: dict, params: dict) -> dict:
    """The params a committed run was made with, as its dvc.lock records them: each stage's params.yaml entries
    (attention.KEY, lesions.KEY, controls.KEY, report, ...) over `params` (a run made before a profile changed)."""
    import copy

    params = copy.deepcopy(params)
    for stage in lock["stages"].values():
        for dotted, value in ((stage.get("params") or {}).get("params.yaml") or {}).items():
            *path, last = dotted.split(".")
            node = params
            for k in path:
                node = node.setdefault(k, {})
            node[last] = copy.deepcopy(value)
    return params


def json_and_array_verdicts(results, params: dict, where) -> dict:
    """The claims' rows judged twice, each from a copy of `results`: as its JSON outputs say (the arrays removed),
    and from its arrays alone (every JSON interval scrambled); and the loaded outputs of the second."""
    json_only, arrays_only = where / "json-only", where / "arrays-only"
    shutil.copytree(results, json_only / "results", ignore=shutil.ignore_patterns("*.npz"))
    shutil.copytree(results, arrays_only / "results")
    for path in (arrays_only / "results").rglob("*.json"):
        path.write_text(json.dumps(scrambled(json.loads(path.read_text()))))
    return {"json": _rows(json_only, params), "arrays": _rows(arrays_only, params),
            "loaded": loaded(params, arrays_only)}


def as_json(obj):
    """What a stage's JSON holds for obj (tuples become lists)."""
    return json.loads(json.dumps(obj))


# ---------------------------------------------------------------- a fresh tiny-profile run

D16, D64 = "toy-fmnist-d16", "toy-fmnist-d64"


@pytest.mark.slow
def test_a_fresh_runs_arrays_give_its_json_intervals_and_its_verdicts(project, monkeypatch, tmp_path):
    """The tiny profile with d = 64 beside d = 16 (the dimension claim's pair, seeds shared) and the noise sweep on
    the whole test set (as the default): the maps, dims and controls arrays give back exactly their JSON's
    intervals, and every claim's rows, effects and verdicts are the same from the arrays alone as from the JSON."""
    import pipeline.stages.embed as embed
    from pipeline.cli import app
    from pipeline.recompute import controls_estimates, dims_difference, maps_estimates, read_arrays, run_gain

    params = read_yaml((project / "params.yaml").read_text())
    d16 = params["attention"][D16]
    params["attention"] = {D16: d16, D64: {**d16, "attn_dim": 64}}
    params["lesions"] = {D16: params["lesions"][D16]}
    params["noise"]["test_subset"] = 0
    params["report"]["figures"] = {"fig2": D16, "fig4a": D16, "fig4b": D64, "fig4c": D16}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(ROOT / "analysis_plan.yaml", project / "analysis_plan.yaml")
    rng = np.random.default_rng(0)
    monkeypatch.setattr(embed, "umap_2d", lambda q, seed, n_neighbors: rng.normal(size=(len(q), 2)))  # not judged
    stages = [("pretrain", "toy-fmnist"), ("train-attn", D16), ("train-attn", D64), ("noise", D16), ("noise", D64),
              ("dims",), ("lesions", D16), ("embed", D16), ("embed", D64), ("maps", D16), ("maps", D64),
              ("controls", D16)]
    for args in stages:
        r = CliRunner().invoke(app, ["stage", *args])
        assert r.exit_code == 0, (args, r.output)

    res = project / "results"
    for key in (D16, D64):  # maps: the rates from hits.npz
        stats = json.loads(outputs.MAPS_STATS.path(key, project).read_text())
        with np.load(outputs.MAPS_HITS.path(key, project)) as z:
            assert list(z["seeds"]) == stats["seeds"] and z["top1"].dtype == bool
            assert z["top1"].shape == z["top3"].shape == (len(stats["seeds"]), stats["n"])
            assert as_json(maps_estimates(z["top1"], z["top3"])) == {k: stats[k] for k in ("top1_rate", "top3_rate")}
    ctl = json.loads(outputs.CONTROLS.path(D16, project).read_text())
    with np.load(outputs.CONTROLS_CORRECT.path(D16, project)) as z:  # controls: every model on the same images
        assert list(z["methods"]) == [r["method"] for r in ctl["controls"]] and list(z["seeds"]) == ctl["seeds"]
        assert z["correct"].shape == (len(ctl["controls"]), 2, ctl["test_images"]) and z["correct"].dtype == bool
        est = as_json(controls_estimates(z["baseline"], z["gattanet"], z["correct"]))
        assert [r["accuracy"] for r in ctl["controls"]] == [float(c.mean()) for c in z["correct"]]
    assert est["gattanet_gain"] == ctl["gattanet_gain"]
    assert est["controls"] == [{k: r[k] for k in ("gain", "vs_gattanet", "kept")} for r in ctl["controls"]]
    dims = json.loads(outputs.DIMS.path(root=project).read_text())  # dims: from the noise arrays of both runs
    noise = {k: read_arrays(outputs.NOISE_CORRECT.path(k, project)) for k in (D16, D64)}
    for row in dims["rows"]:
        assert row["gain"] == as_json(run_gain(noise[row["run"]], 0.0))
        assert row["gain_at_peak"] == as_json(run_gain(noise[row["run"]], row["peak_sigma"]))
    assert {c["at"] for c in dims["comparisons"]} == {"clean", "peak", "sweep"}
    for c in dims["comparisons"]:
        assert c["difference"] == as_json(dims_difference(noise[c["small"]], noise[c["large"]], c["sigma"]))
        assert c["difference"]["paired"] and c["difference"]["seeds"] == [2, 2]  # seed s of both runs shared

    judged = json_and_array_verdicts(res, params, tmp_path)
    loaded = judged["loaded"]  # a fresh run's JSON holds every contrast: nothing is stale
    assert sorted(loaded.from_arrays) == sorted(p.relative_to(project).as_posix() for p in res.rglob("*.npz"))
    assert loaded.arrays_missing == []
    assert tuple(judged["arrays"]) == CLAIMS
    for cid in CLAIMS:
        assert judged["arrays"][cid] == judged["json"][cid], cid
        if cid not in ("noise_visible", "lesions"):  # tiny: the baseline never collapses, G is not above 0
            assert any(effect is not None for _, _, effect in judged["arrays"][cid]), cid  # something was judged


# ---------------------------------------------------------------- the default run committed in results/


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> dict:
    """The committed default run's claims judged from its JSON and from its arrays alone (results/, the params its
    dvc.lock records)."""
    params = locked_params(read_yaml((ROOT / "dvc.lock").read_text()),
                           read_yaml((ROOT / "params.yaml").read_text()))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)  # the analysis plan is the project's
        judged = json_and_array_verdicts(ROOT / "results", params, tmp_path_factory.mktemp("committed"))
    return {"params": params, **judged}


@pytest.mark.parametrize("claim", CLAIMS)
def test_a_report_built_from_the_committed_arrays_gives_the_committed_verdicts(committed, claim):
    """Per claim: its rows, effects and verdicts from the committed arrays alone (every JSON interval scrambled) are
    those of the committed JSON. Skipped, naming them, only while the committed run lacks the claim's arrays."""
    missing = [a for a in claim_arrays(committed["params"])[claim] if not (ROOT / a).exists()]
    if missing:
        pytest.skip(f"the committed run lacks {', '.join(missing)}: rerun the default (`dvc repro`) and commit them")
    same_or_redecided(committed["arrays"][claim], committed["json"][claim])
    if claim == "dimension" and len({a["attn_dim"] for a in committed["params"]["attention"].values()}) < 2:
        assert not any(effect is not None for _, _, effect in committed["arrays"][claim])
        pytest.skip("the committed default runs one attention dimension (d = 64 is in the full profile)")
    assert any(effect is not None for _, _, effect in committed["arrays"][claim])
    used = set(committed["loaded"].from_arrays)
    assert {a for a in claim_arrays(committed["params"])[claim] if a.endswith(".npz")} <= used


# ---------------------------------------------------------------- the backbones profile's run, reports/backbones/

BACKBONES_RUN = ROOT / "reports" / "backbones"


@pytest.fixture(scope="module")
def committed_backbones(tmp_path_factory) -> dict:
    """The committed backbones-profile run's claims judged from its JSON and from its arrays alone."""
    return committed_profile_run(BACKBONES_RUN, tmp_path_factory.mktemp("backbones"))


def committed_profile_run(run, where) -> dict:
    """A run committed under reports/<profile>/: its params.yaml, and its claims judged from its JSON and from its
    arrays alone (under the project's analysis plan)."""
    params = read_yaml((run / "params.yaml").read_text())
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        judged = json_and_array_verdicts(run / "results", params, where)
    return {"params": params, **judged}


@pytest.mark.parametrize("claim", ("clean_gain", "noise", "query_space", "true_class"))
def test_the_committed_backbones_run_is_rebuilt_from_its_arrays(committed_backbones, claim):
    """The three-backbone run under reports/backbones/ (issue 20's random factor): each claim's rows, effects and
    verdicts from its committed arrays alone are its JSON's, the clean gain led by the across-backbone row, and its
    summary's gains are the arrays' means."""
    judged = committed_backbones
    arrays, from_json = judged["arrays"][claim], judged["json"][claim]
    if claim == "clean_gain":  # the across-backbone row needs every backbone's per-image gains: arrays only
        (row, verdict, effect), arrays = arrays[0], arrays[1:]
        assert "across 3 backbones" in row and effect is not None and verdict != "not run"
        assert from_json[0] == (row, "not run", None)
        from_json = from_json[1:]
    assert arrays == from_json
    assert any(effect is not None for _, _, effect in arrays)
    if claim == "clean_gain":
        summary = json.loads((BACKBONES_RUN / "summary.json").read_text())
        for row in summary["rows"]:
            z = np.load(BACKBONES_RUN / outputs.NOISE_CORRECT.pattern.format(key=row["run"]))
            assert row["gain"] == pytest.approx(z["gattanet"][:, 0].mean() - z["baseline"][0].mean(), abs=1e-6)


# ---------------------------------------------------------------- the related-work tracks' runs, reports/related-*/

RELATED_RUNS = sorted(p for p in (ROOT / "reports").glob("related-*") if (p / "params.yaml").exists())
CLUTTER_RUN = ROOT / "reports" / "clutter"
CLUTTER_RUNS = [CLUTTER_RUN] if (CLUTTER_RUN / "params.yaml").exists() else []


@pytest.mark.parametrize("run", RELATED_RUNS + CLUTTER_RUNS, ids=lambda p: p.name)
def test_a_committed_related_work_run_is_rebuilt_from_its_arrays(run, tmp_path):
    """A track's run under reports/related-*/ (issue 21), or the clutter run's from-scratch track (RAM, the toy and
    GAttANet trained from scratch, issue 37): every method its profile lists has its JSON and per-image
    arrays; from the arrays alone (every JSON interval scrambled) each row's gains are its JSON's, each row is paired
    with its track's GAttANet on the same images, and the committed report prints those paired differences."""
    from pipeline.report.extensions import WORDS
    from pipeline.report.tables import TRACK_REFERENCES, baselines_section

    params = read_yaml((run / "params.yaml").read_text())
    methods = params["baselines"]["methods"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        loaded = json_and_array_verdicts(run / "results", params, tmp_path)["loaded"]
    assert sorted(loaded.baselines) == sorted(methods) and loaded.arrays_missing == []
    for m in methods:
        committed = json.loads((run / outputs.BASELINES.pattern.format(key=m)).read_text())
        for key in ("clean_gain", "gain_at_peak"):
            assert as_json(loaded.baselines[m][key]) == committed[key], (m, key)
        z = loaded.baseline_arrays[m]
        assert list(z["seeds"]) == params["attention"][params["baselines"]["run"]]["seeds"]
        assert committed["clean_acc"] == pytest.approx(z["correct"][:, 0].mean(), abs=1e-9)
    section = baselines_section(loaded, validate(params))
    html = (run / "index.html").read_text()
    references = set(TRACK_REFERENCES.values())
    assert len(section["rows"]) == len(methods)
    for row in section["rows"]:
        if row["method"] in references:
            assert row["vs_gattanet"] == "the reference"
            continue
        for suffix in ("", "_peak"):
            assert row["vs_verdict" + suffix] in WORDS.values(), (row["method"], suffix)
            assert row["vs_gattanet" + suffix] in html, (row["method"], suffix)


ADDON_RUNS = [p for p in RELATED_RUNS if p.name.startswith("related-addon")]


def _backbone_md5(lock: dict, key: str) -> str:
    outs = lock["stages"][f"pretrain@{key}"]["outs"]
    return next(o["md5"] for o in outs if o["path"] == f"models/backbones/{key}.pt")


@pytest.mark.skipif(not ADDON_RUNS, reason="no add-on track run committed under reports/related-addon*/")
def test_the_add_on_profiles_share_the_default_backbone_and_one_gattanet():
    """The add-on track is split over profiles (issue 21): each ran on the committed default run's frozen backbone
    (the same checkpoint hash as the root dvc.lock's) and paired its rows with the same GAttANet models, so its
    rows can be read as one table."""
    root_lock = read_yaml((ROOT / "dvc.lock").read_text())
    reference = None
    for run in ADDON_RUNS:
        params = read_yaml((run / "params.yaml").read_text())
        key = params["baselines"]["backbone"]
        lock = read_yaml((run / "dvc.lock").read_text())
        assert _backbone_md5(lock, key) == _backbone_md5(root_lock, key), run.name
        z = np.load(run / outputs.BASELINES_CORRECT.pattern.format(key="gattanet"))
        if reference is None:
            reference = (run.name, z)
            continue
        for array in ("seeds", "sigmas", "baseline", "correct"):
            assert np.array_equal(z[array], reference[1][array]), (run.name, reference[0], array)


# ---------------------------------------------------------------- the pairings, on synthetic arrays


def _shared_seed_arrays(rng, seeds=3, n=400, sigmas=2):
    """Correctness of two models per seed whose seed effects are shared (the same derived seed) and large beside the
    images': pairing per seed cancels them, an unpaired interval does not."""
    base = rng.random((sigmas, n)) < 0.8
    shift = np.array([-0.08, 0.0, 0.08])[:seeds, None, None]  # the shared seed effect
    a = rng.random((seeds, sigmas, n)) < np.clip(0.8 + shift + 0.01, 0, 1)
    b = rng.random((seeds, sigmas, n)) < np.clip(0.8 + shift, 0, 1)
    return base, a, b


def test_the_dims_difference_is_paired_per_seed():
    from gattanet.analysis.stats import effect_ci
    from pipeline.recompute import dims_difference

    base, a, b = _shared_seed_arrays(np.random.default_rng(0))
    seeds, sigmas = np.array([0, 1, 2]), np.array([0.0, 0.1])
    small = {"seeds": seeds, "sigmas": sigmas, "baseline": base, "gattanet": b}
    large = {"seeds": seeds, "sigmas": sigmas, "baseline": base, "gattanet": a}
    got = dims_difference(small, large, 0.1)
    gain = lambda g: g[:, 1].astype(float) - base[1].astype(float)[None, :]  # noqa: E731
    want = effect_ci([(1.0, gain(a)), (-1.0, gain(b))], paired=True).as_dict()
    unpaired = effect_ci([(1.0, gain(a)), (-1.0, gain(b))]).as_dict()
    assert got == want and got["paired"]
    assert got["half_width"] < unpaired["half_width"] / 2  # the shared seed effects cancel
    other = dims_difference(small, {**large, "seeds": np.array([3, 4, 5])}, 0.1)
    assert not other["paired"] and other == unpaired  # different seeds: independent groups


def test_the_controls_and_extensions_are_paired_per_seed():
    from gattanet.analysis.stats import effect_ci
    from pipeline.recompute import controls_estimates, extension_difference, extension_estimates, kept_share

    base, a, b = _shared_seed_arrays(np.random.default_rng(1))
    full, ctl = a[:, 0].astype(float), b[:, 0].astype(float)
    est = controls_estimates(base[0], a[:, 0], b[:, 0][None])
    row = est["controls"][0]
    assert row["vs_gattanet"] == effect_ci([(1.0, full), (-1.0, ctl)], paired=True).as_dict()
    assert row["vs_gattanet"]["paired"]
    b0 = base[0].astype(float)
    assert row["kept"] == kept_share(ctl, full, b0) and row["kept"]["mean"] == pytest.approx(
        (ctl - b0).mean() - 0.5 * (full - b0).mean(), abs=1e-12)
    ext = extension_estimates(base, b, a)  # variant a against GAttANet b
    for i in range(2):
        assert ext["vs_gattanet"][i] == effect_ci([(1.0, a[:, i].astype(float)), (-1.0, b[:, i].astype(float))],
                                                  paired=True).as_dict()
    seeds = np.array([0, 1, 2])
    diff = extension_difference({"seeds": seeds, "variant": a}, {"seeds": seeds, "variant": b})
    assert all(d["paired"] for d in diff) and diff[1] == ext["vs_gattanet"][1]


def test_a_lesion_contrast_on_gs_scale_is_the_kept_share():
    from pipeline.recompute import lesion_estimates

    rng = np.random.default_rng(2)
    base = rng.random(500) < 0.8
    full = np.tile(base, (3, 1)) | (rng.random((3, 500)) < 0.1)  # the full model: a gain G
    correct = np.stack([np.tile(base, (3, 1)), full, full])  # patterns: none, full, a lesion keeping all of G
    ests = lesion_estimates(base, correct, 1)
    g = (full.astype(float) - base.astype(float)).mean()
    assert ests[0]["kept"]["mean"] == pytest.approx(-0.5 * g, abs=1e-12)  # loses all of G
    assert ests[2]["kept"]["mean"] == pytest.approx(0.5 * g, abs=1e-12) and ests[2]["kept"]["share"] == 0.5
    assert lesion_estimates(base, correct, 1, share=0.25)[2]["kept"]["mean"] == pytest.approx(0.75 * g, abs=1e-12)


# ---------------------------------------------------------------- the clutter profile's run, reports/clutter/


@pytest.fixture(scope="module")
def committed_clutter(tmp_path_factory) -> dict:
    """The committed clutter-profile run's claims judged from its JSON and from its arrays alone."""
    return committed_profile_run(CLUTTER_RUN, tmp_path_factory.mktemp("clutter"))


@pytest.mark.skipif(not CLUTTER_RUNS, reason="no clutter run committed under reports/clutter/")
@pytest.mark.parametrize("claim", CLAIMS)
def test_the_committed_clutter_run_is_rebuilt_from_its_arrays(committed_clutter, claim):
    """The cluttered-task run under reports/clutter/ (issue 37): each claim's rows, effects and verdicts from its
    committed arrays alone are its JSON's, every claim judges at least one row (both dimensions ran, with lesions and
    controls), and its summary's gains are the noise arrays' clean means."""
    arrays, from_json = committed_clutter["arrays"][claim], committed_clutter["json"][claim]
    assert arrays == from_json
    assert any(effect is not None for _, _, effect in arrays)
    assert {a for a in claim_arrays(committed_clutter["params"])[claim] if a.endswith(".npz")} <= \
        set(committed_clutter["loaded"].from_arrays)
    if claim == "clean_gain":
        summary = json.loads((CLUTTER_RUN / "summary.json").read_text())
        assert {row["run"] for row in summary["rows"]} == set(committed_clutter["params"]["attention"])
        for row in summary["rows"]:
            z = np.load(CLUTTER_RUN / outputs.NOISE_CORRECT.pattern.format(key=row["run"]))
            assert row["gain"] == pytest.approx(z["gattanet"][:, 0].mean() - z["baseline"][0].mean(), abs=1e-6)


# ---------------------------------------------------------------- the extensions profile's run, reports/extensions/

EXTENSIONS_RUN = ROOT / "reports" / "extensions"


@pytest.mark.skipif(not (EXTENSIONS_RUN / "params.yaml").exists(), reason="no extensions run committed")
def test_the_committed_extensions_run_is_re_decided_from_its_arrays_under_the_plan():
    """reports/extensions/ holds the extension arrays only (its default run was not committed beside it): each
    extension's variant − GAttANet per σ, and fine-tuning − its control, recomputed from those arrays alone, judged
    under the analysis plan (one Holm family over the section), are the differences and words its report prints."""
    from types import SimpleNamespace

    from markupsafe import escape

    from pipeline.recompute import extension_estimates, read_arrays
    from pipeline.report.analysis_plan import load_plan
    from pipeline.report.extensions import extensions_section

    params = read_yaml((EXTENSIONS_RUN / "params.yaml").read_text())
    exts, arrays = {}, {}
    for key in params["extensions"]:
        res = json.loads(outputs.EXTENSION_METRICS.path(key, EXTENSIONS_RUN).read_text())
        z = read_arrays(outputs.EXTENSION_CORRECT.path(key, EXTENSIONS_RUN))
        res.update({k: scrambled(res[k]) for k in ("gain", "vs_gattanet")})  # the JSON's intervals never read
        exts[key] = res | extension_estimates(z["baseline"], z["gattanet"], z["variant"])
        arrays[key] = z
    plan = load_plan()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        section = extensions_section(SimpleNamespace(extensions=exts, extension_arrays=arrays), validate(params),
                                     plan.alpha_one_sided, plan.get("multiplicity") == "holm")
    html = (EXTENSIONS_RUN / "index.html").read_text()
    cells = [c for r in section["rows"] + section["pairs"] for c in r["cells"]]
    assert cells and section["family"] == len(cells)
    for c in cells:
        assert str(escape(c["diff"])) in html and c["word"] in html


COMMITTED_RUNS = sorted(p for p in (ROOT / "reports").iterdir()
                        if (p / "params.yaml").exists() and (p / "results" / "train-attn").is_dir())


@pytest.mark.parametrize("run", COMMITTED_RUNS, ids=lambda p: p.name)
def test_each_committed_report_is_rendered_under_the_current_analysis_plan(run):
    """make rerender (pipeline/report/committed.py) re-renders every committed run with its own results under the plan: its page
    prints the plan's sha256 and each claim's overall verdicts as the arrays decide them today."""
    from markupsafe import escape

    from pipeline.report.analysis_plan import load_plan

    html = (run / "index.html").read_text()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        assert load_plan().sha256 in html
        params = read_yaml((run / "params.yaml").read_text())
        for claim in judge(params, run):
            for e in claim.evidence:
                if e.effect is not None:
                    assert str(escape(ci_text_of(e))) in html, (claim.id, e.row)


def ci_text_of(e) -> str:
    """The effect as the report prints it beside its row."""
    return e.numbers.get("effect (95 % CI)", "")


def test_the_clean_gain_has_one_source_the_noise_arrays(tmp_path):
    """Each run's clean gain is read once, into Outputs.clean_gain: from the noise arrays at σ = 0 where they cover
    train-attn's test images, train-attn's stored `gain` left as it was written and not read; from that stored gain,
    named in arrays_missing, where the sweep ran on a subset."""
    from pipeline.recompute import run_gain
    from tests.report_fixtures import fake_params, write_fake_outputs

    params = fake_params()
    write_fake_outputs(tmp_path, params)
    key = next(iter(params["attention"]))
    metrics = outputs.TRAIN_ATTN_METRICS.path(key, tmp_path)
    stored = json.loads(metrics.read_text())
    metrics.write_text(json.dumps({**stored, "gain": scrambled(stored["gain"])}))
    with np.load(outputs.NOISE_CORRECT.path(key, tmp_path)) as z:
        truth = as_json(run_gain(dict(z), 0.0))
    out = loaded(params, tmp_path)
    assert as_json(out.clean_gain[key]) == truth != out.train_attn[key]["gain"]
    assert out.train_attn[key]["gain"] == scrambled(stored["gain"])  # as stored: not overwritten, not read
    clean = next(c for c in judge(params, tmp_path) if c.id == "clean_gain")
    assert next(e for e in clean.evidence if e.row == key).effect.mean == pytest.approx(truth["mean"])

    params["noise"]["test_subset"] = 100
    subset = loaded(params, tmp_path)
    assert subset.clean_gain[key] == subset.train_attn[key]["gain"]
    assert any(m.startswith(f"results/train-attn/{key}/metrics.json: clean gain read from the JSON (the noise sweep "
                            "ran on a test subset") for m in subset.arrays_missing)
