"""The paper's claims judged from stage outputs (pipeline/report/claims.py): each row's verdict from its CI
(supported / contradicted / inconclusive), the overall verdict per backbone family, lesion rows that do not
apply without a gain to dissect, and the noise claim decided at σ* fixed in params.

The outputs are synthetic (tests/report_fixtures.py): per-image correctness with a known true effect, the
intervals computed from it as the stages compute them."""

import copy
import json

import numpy as np
import pytest
import yaml

from gattanet.analysis.stats import (CONTRADICTED, INCONCLUSIVE, NOT_APPLICABLE, NOT_RUN, SUPPORTED, at_most,
                                     effect_ci, equivalence, releveled)
from pipeline.report import claims as claims_module
from pipeline.report.analysis_plan import load_plan, parse_plan
from pipeline.report.claims import (OVERALL_RULE, ci_text, decided, estimate, evaluate_claims, overall_verdict,
                                    pts, shifted)
from pipeline.report.load import load_outputs, load_paper
from tests import report_fixtures
from tests.report_fixtures import OPTIONAL, add_resnet_run, fake_params, write_fake_outputs
from tests.helpers import scrambled

D16, D64 = "toy-fmnist-d16", "toy-fmnist-d64"


def claims_of(root, params, **kw) -> dict:
    """Write synthetic outputs with write_fake_outputs(**kw) and judge the claims on them."""
    write_fake_outputs(root, params, **kw)
    return {c.id: c for c in evaluate_claims(load_outputs(params, root), load_paper(), params)}


def rows(claim) -> dict:
    return {e.row: e for e in claim.evidence}


# ---------------------------------------------------------------- row verdicts from the CI


def test_a_true_gain_is_supported_and_its_interval_covers_it(tmp_path):
    params = fake_params()
    claim = claims_of(tmp_path, params, gain={D16: 0.02, D64: 0.03})["clean_gain"]
    for run, true in ((D16, 0.02), (D64, 0.03)):
        e = rows(claim)[run]
        assert e.verdict == SUPPORTED and e.note == ""
        assert e.effect.mean == pytest.approx(true, abs=1e-9) and e.effect.low > 0
        assert e.effect.seeds == (3,) and e.effect.images == report_fixtures.N_IMAGES
        assert e.numbers["effect (95 % CI)"] == ci_text(e.effect)
        assert e.numbers["paper's gain here"] == "none stated for this dataset"  # Fashion-MNIST: no size to meet
    assert claim.overall == {"toy": SUPPORTED} and claim.verdict == SUPPORTED


def test_no_gain_is_inconclusive_and_the_note_names_the_resolvable_effect(tmp_path):
    params = fake_params()
    claim = claims_of(tmp_path, params, gain={D16: 0.0, D64: 0.0})["clean_gain"]
    for e in claim.evidence:
        assert e.verdict == INCONCLUSIVE
        assert e.effect.low < 0 < e.effect.high
        assert f"would detect an effect of ±{100 * e.effect.detectable_80:.2f} pts with 80 % power" in e.note
        assert e.effect.detectable_80 > e.effect.half_width
    assert claim.overall == {"toy": INCONCLUSIVE}


def test_a_negative_effect_contradicts(tmp_path):
    params = fake_params()
    claims = claims_of(tmp_path, params, gain={D16: -0.02, D64: -0.03})
    for e in claims["clean_gain"].evidence:
        assert e.verdict == CONTRADICTED and e.effect.high < 0
    assert claims["clean_gain"].overall == {"toy": CONTRADICTED}
    assert claims["noise"].overall == {"toy": CONTRADICTED}  # the negative gain grows more negative at σ*
    assert claims["dimension"].overall == {"toy": CONTRADICTED}  # d = 64 loses more than d = 16


def test_on_the_papers_own_dataset_a_gain_surely_below_the_papers_contradicts(tmp_path):
    """+1 pt, resolved from zero: supported on a substitute dataset, contradicted on CIFAR10 where the paper
    states +2.06 pts."""
    claims = {}
    for dataset in ("fashion-mnist", "cifar10"):
        params = fake_params(dataset)
        claims[dataset] = claims_of(tmp_path / dataset, params, gain=0.01)["clean_gain"].evidence[0]
    sub, own = claims["fashion-mnist"], claims["cifar10"]
    assert sub.effect.low > 0 and own.effect.low > 0 and own.effect.high < 0.0206
    assert sub.verdict == SUPPORTED and own.verdict == CONTRADICTED
    assert own.numbers["paper's gain here"] == pts(0.8534 - 0.8328)


def test_query_space_and_true_class_rates_are_judged_against_halfway_to_perfect(tmp_path, monkeypatch):
    params = fake_params()
    claims = claims_of(tmp_path / "high", params)
    assert {e.verdict for e in claims["query_space"].evidence} == {SUPPORTED}  # 83 % vs the bar 55 %
    assert {e.verdict for e in claims["true_class"].evidence} == {SUPPORTED}   # 90 % vs the bar 65 %
    e = rows(claims["true_class"])[D16]
    assert e.numbers["bar"] == "65.00 %" and e.effect.mean == pytest.approx(report_fixtures.TOP3 - 0.65, abs=1e-3)
    monkeypatch.setattr(report_fixtures, "TOP3", 0.5)       # above chance (30 %), below the bar
    monkeypatch.setattr(report_fixtures, "QUERY_KNN", 0.55)  # right at the bar
    claims = claims_of(tmp_path / "low", params)
    assert {e.verdict for e in claims["true_class"].evidence} == {CONTRADICTED}
    assert {rows(claims["query_space"])[f"{run}: classes"].verdict for run in (D16, D64)} == {INCONCLUSIVE}


def test_query_space_controls_q_must_beat_a_random_projection_and_the_pca_of_the_penultimate(tmp_path, monkeypatch):
    claim = claims_of(tmp_path / "beats", fake_params())["query_space"]  # q 83 % vs random 60 %, PCA 75 %
    by_row = rows(claim)
    for control, rate in report_fixtures.CONTROL_KNN.items():
        e = by_row[f"{D16}: classes: q vs {control}"]
        assert e.verdict == SUPPORTED
        assert e.effect.mean == pytest.approx(report_fixtures.QUERY_KNN - rate, abs=1e-3)
        assert by_row[f"{D16}: groups: q vs {control}"].verdict == SUPPORTED
    monkeypatch.setattr(report_fixtures, "CONTROL_KNN", {"random": 0.9, "pca": report_fixtures.QUERY_KNN})
    by_row = rows(claims_of(tmp_path / "loses", fake_params())["query_space"])
    assert by_row[f"{D16}: classes: q vs random"].verdict == CONTRADICTED  # the control separates better
    assert by_row[f"{D16}: classes: q vs pca"].verdict == INCONCLUSIVE     # as well as q
    assert by_row[f"{D16}: classes"].verdict == SUPPORTED  # above the bar, yet not q's doing


def test_an_embedding_without_controls_says_how_to_get_them(tmp_path):
    params = fake_params()
    write_fake_outputs(tmp_path, params)
    path = tmp_path / f"results/embedding/{D16}/stats.json"
    stats = json.loads(path.read_text())
    del stats["controls"]
    path.write_text(json.dumps(stats))
    path.with_name("correct.npz").unlink()  # an embedding from before the controls had no arrays either
    claim = {c.id: c for c in evaluate_claims(load_outputs(params, tmp_path), load_paper(), params)}["query_space"]
    e = rows(claim)[f"{D16}: classes: q vs controls"]
    assert e.verdict == NOT_RUN and e.note == f"the embedding predates its controls: dvc repro embed@{D16}"


# ---------------------------------------------------------------- the overall rule, per backbone family


@pytest.mark.parametrize("verdicts, want", [
    ([SUPPORTED, SUPPORTED], SUPPORTED),
    ([SUPPORTED, NOT_RUN, NOT_APPLICABLE], SUPPORTED),    # out of scope rows do not count
    ([SUPPORTED, INCONCLUSIVE], INCONCLUSIVE),
    ([SUPPORTED, CONTRADICTED], INCONCLUSIVE),            # mixed
    ([CONTRADICTED, INCONCLUSIVE], INCONCLUSIVE),         # contradicted needs every row, as supported does
    ([CONTRADICTED, CONTRADICTED, NOT_RUN], CONTRADICTED),
    ([INCONCLUSIVE, INCONCLUSIVE], INCONCLUSIVE),
    ([NOT_APPLICABLE, NOT_RUN], NOT_APPLICABLE),
    ([NOT_RUN], NOT_RUN),
])
def test_overall_verdict_follows_the_stated_rule(verdicts, want):
    assert overall_verdict(verdicts) == want
    assert "Per backbone family" in OVERALL_RULE


def test_an_inconclusive_resnet_row_leaves_the_toy_familys_verdict_alone(tmp_path):
    params = fake_params()
    resnet = add_resnet_run(params)
    claim = claims_of(tmp_path, params, gain={D16: 0.02, D64: 0.03, resnet: 0.0}, skip=OPTIONAL)["clean_gain"]
    assert rows(claim)[resnet].verdict == INCONCLUSIVE and rows(claim)[resnet].family == "resnet18"
    assert claim.overall == {"toy": SUPPORTED, "resnet18": INCONCLUSIVE}
    assert claim.verdict == "mixed"  # families that disagree are not folded into one word


def test_supported_and_contradicted_rows_in_one_family_are_inconclusive(tmp_path):
    params = fake_params()
    claim = claims_of(tmp_path, params, gain={D16: 0.02, D64: -0.02}, skip=OPTIONAL)["clean_gain"]
    assert [e.verdict for e in claim.evidence] == [SUPPORTED, CONTRADICTED]
    assert claim.overall == {"toy": INCONCLUSIVE}
    claim = claims_of(tmp_path / "b", params, gain={D16: -0.02, D64: 0.0}, skip=OPTIONAL)["clean_gain"]
    assert [e.verdict for e in claim.evidence] == [CONTRADICTED, INCONCLUSIVE]
    assert claim.overall == {"toy": INCONCLUSIVE}
    claim = claims_of(tmp_path / "c", params, gain={D16: -0.02, D64: -0.03}, skip=OPTIONAL)["clean_gain"]
    assert claim.overall == {"toy": CONTRADICTED}


# ---------------------------------------------------------------- lesions: the paper's own contrasts


def with_plan(monkeypatch, *keys_and_value) -> None:
    """Judge the claims under the committed analysis plan with one value changed, e.g. ("lesions", "margin", 0.03)."""
    data = copy.deepcopy(load_plan().data)
    *path, last, value = keys_and_value
    node = data["claims"]
    for k in path:
        node = node[k]
    node[last] = value
    monkeypatch.setattr(claims_module, "load_plan", lambda: parse_plan(yaml.safe_dump(data, allow_unicode=True)))


FIRST, LAST = f"{D16}: .ccdd (first layer ablated) vs baseline", f"{D16}: cccd. (last layer ablated) vs full"


def alone(layer: str, pattern: str, run: str = D16) -> str:
    return f"{run}: {pattern} ({layer} alone) vs baseline"


@pytest.mark.parametrize("first, last, fc1, want", [
    # multiples of G = +2 pts over the baseline; margin ±3 pts; CIs about ±1 pt (4,000 images)
    (-2.5, 0.9, 0.0, SUPPORTED),      # −5 pts (gain lost, and worse) | −0.2 pts of full | 0 pts of baseline
    (3.0, -3.0, 3.0, CONTRADICTED),   # keeps +6 pts | 8 pts below full | +6 pts over the baseline
    (1.5, -0.5, 1.5, INCONCLUSIVE),   # +3 pts, −3 pts, +3 pts: right at the margin, the CI spans it
])
def test_each_lesion_contrast_decides_against_the_plans_margin(tmp_path, monkeypatch, first, last, fc1, want):
    with_plan(monkeypatch, "lesions", "margin", 0.03)
    claim = claims_of(tmp_path, fake_params(), lesion_gains={".ccdd": first, "cccd.": last, "...d.": fc1})["lesions"]
    by_row = rows(claim)
    assert by_row[FIRST].effect == estimate(by_row[FIRST].effect.as_dict())
    for row in (FIRST, LAST, alone("fc1", "...d.")):
        assert by_row[row].verdict == want, row
        assert by_row[row].numbers["margin"] == "±3.00 pts"
    assert by_row[FIRST].effect.mean == pytest.approx(first * 0.02, abs=1e-9)     # against the baseline
    assert by_row[LAST].effect.mean == pytest.approx((last - 1) * 0.02, abs=1e-9)  # against the full model
    assert by_row[alone("conv1", "c....")].verdict == SUPPORTED  # 0 pts: equivalent to the baseline
    if want == INCONCLUSIVE:
        assert "could only have shown equivalence within" in by_row[LAST].note


def test_lesion_rows_read_their_margin_from_the_plan(tmp_path, monkeypatch):
    """The committed margin (0.3 pts) cannot be met by 4,000 images (CIs ±1 pt): an equivalence row whose models
    differ is inconclusive, and says what margin the run could have met; a wider margin in the plan decides it."""
    near = {"cccd.": 0.9, "c....": 0.1}  # −0.2 pts of the full model, +0.2 pts over the baseline
    claim = claims_of(tmp_path / "plan", fake_params(), lesion_gains=near)["lesions"]
    assert len(claim.evidence) == 2 + 5  # first ablated, last ablated, each of the 5 layers alone
    by_row = rows(claim)
    assert by_row[FIRST].verdict == SUPPORTED  # −5 pts: surely below +0.3 pts
    assert by_row[LAST].verdict == INCONCLUSIVE and by_row[LAST].numbers["margin"] == "±0.30 pts"
    reach = max(abs(by_row[LAST].effect.low), abs(by_row[LAST].effect.high))
    assert f"within {100 * reach:.2f} pts" in by_row[LAST].note
    assert by_row[alone("conv1", "c....")].verdict == INCONCLUSIVE
    assert by_row[alone("conv2", ".c...")].verdict == SUPPORTED  # the baseline itself: equivalent at any margin
    with_plan(monkeypatch, "lesions", "margin", 0.03)
    wide = rows(claims_of(tmp_path / "wide", fake_params(), lesion_gains=near)["lesions"])
    assert {e.verdict for e in wide.values()} == {SUPPORTED}


@pytest.mark.parametrize("gain", [0.0, -0.02])
def test_lesion_rows_are_reported_whatever_the_full_gain_with_g_beside_each(tmp_path, monkeypatch, gain):
    with_plan(monkeypatch, "lesions", "margin", 0.03)
    claim = claims_of(tmp_path, fake_params(), gain={D16: gain})["lesions"]
    les = json.loads((tmp_path / f"results/lesions/{D16}.json").read_text())
    g = estimate(next(p for p in les["patterns"] if p["kind"] == "full")["vs_baseline"])
    assert len(claim.evidence) == 7 and NOT_APPLICABLE not in {e.verdict for e in claim.evidence}
    for e in claim.evidence:
        assert e.numbers["full gain G"] == ci_text(g) and "G itself is not supported" in e.note


def test_lesions_run_on_every_attention_run_listed(tmp_path):
    params = fake_params()
    params["lesions"][D64] = dict(params["lesions"][D16])
    claim = claims_of(tmp_path, params)["lesions"]
    assert {e.row.split(":")[0] for e in claim.evidence} == {D16, D64}
    assert rows(claim)[f"{D64}: .ccdd (first layer ablated) vs baseline"].verdict == SUPPORTED


def test_equivalence_and_at_most_on_intervals_with_a_known_truth():
    rng = np.random.default_rng(5)
    n = 20_000
    for true, want_eq, want_below in ((0.0, SUPPORTED, SUPPORTED), (0.05, CONTRADICTED, CONTRADICTED),
                                      (0.02, INCONCLUSIVE, INCONCLUSIVE)):
        est = effect_ci([(1.0, true + rng.normal(0, 0.3, size=(3, n)))])  # half-width ≈ 0.4 pts
        assert abs(est.mean - true) < 0.005
        assert equivalence(est, 0.02, 0.025) == want_eq and at_most(est, 0.02, 0.025) == want_below
    below = effect_ci([(1.0, -0.05 + rng.normal(0, 0.3, size=(3, n)))])
    assert equivalence(below, 0.02, 0.025) == CONTRADICTED and at_most(below, 0.02, 0.025) == SUPPORTED
    # a one-sided test at α uses the (1 − 2α) interval: at α = 0.025 the 95 % CI itself
    est = effect_ci([(1.0, 0.01 + rng.normal(0, 0.3, size=(3, n)))])
    same = releveled(est, 0.95)
    assert (same.low, same.high) == pytest.approx((est.low, est.high), abs=1e-12)
    assert releveled(est, 0.90).half_width < est.half_width
    edge = est.high + 1e-6
    assert equivalence(est, edge, 0.025) == SUPPORTED and at_most(est, edge, 0.025) == SUPPORTED
    assert equivalence(est, edge, 0.01) == INCONCLUSIVE  # a stricter test needs the wider 98 % interval
    with pytest.raises(ValueError, match="margin"):
        equivalence(est, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        at_most(est, 0.01, 0.5)


# ---------------------------------------------------------------- noise: the growth at σ*


def test_noise_claim_uses_the_growth_at_sigma_star(tmp_path):
    params = fake_params()
    claim = claims_of(tmp_path, params)["noise"]
    sweep = json.loads((tmp_path / f"results/noise/{D16}/sweep.json").read_text())
    e = rows(claim)[f"{D16}: paper's σ* = 0.04"]
    assert e.effect == estimate(sweep["growth"]) and e.verdict == SUPPORTED
    k = sweep["sigmas"].index(0.04)
    assert e.effect.mean == pytest.approx(sweep["gain"][k]["mean"] - sweep["gain"][0]["mean"])
    assert e.numbers["gain at σ* = 0.04"] == ci_text(estimate(sweep["gain"][k]))


def test_noise_claim_is_not_decided_at_the_best_sigma(tmp_path):
    """σ* = 0.25, where the fixture's gain is gone: the growth there is negative, although the gain peaks at
    σ = 0.04 (a maximum over σ would call the claim supported)."""
    params = fake_params()
    params["noise"]["peak_sigma"] = 0.25
    claim = claims_of(tmp_path, params)["noise"]
    sweep = json.loads((tmp_path / f"results/noise/{D16}/sweep.json").read_text())
    best = max(range(len(sweep["sigmas"])), key=lambda i: sweep["gain"][i]["mean"])
    assert sweep["sigmas"][best] == 0.04
    assert estimate(sweep["gain"][best]).low > estimate(sweep["gain"][0]).high  # grows there, clearly
    e = rows(claim)[f"{D16}: paper's σ* = 0.25"]
    assert e.effect == estimate(sweep["growth"])
    assert e.effect.mean == pytest.approx(-0.02, abs=1e-9) and e.verdict == CONTRADICTED
    assert "gain at σ* = 0.25" in e.numbers
    assert rows(claim)[f"{D16}: relative σ* = 0.04"].verdict == SUPPORTED  # the baseline's own moderate noise
    assert claim.overall == {"toy": INCONCLUSIVE}


def test_noise_growth_without_change_is_inconclusive(tmp_path, monkeypatch):
    """A gain flat over σ (the same at σ* as clean): the growth is zero, the row inconclusive."""
    monkeypatch.setattr(report_fixtures, "noise_gain", lambda gain, sigmas: np.full(len(sigmas), gain))
    claim = claims_of(tmp_path, fake_params())["noise"]
    for e in claim.evidence:
        assert e.verdict == INCONCLUSIVE and abs(e.effect.mean) < 1e-9
        assert f"±{100 * e.effect.detectable_80:.2f} pts with 80 % power" in e.note


def test_a_missing_sweep_is_not_run_with_its_command(tmp_path):
    params = fake_params()
    write_fake_outputs(tmp_path, params)
    (tmp_path / f"results/noise/{D64}/sweep.json").unlink()
    claim = {c.id: c for c in evaluate_claims(load_outputs(params, tmp_path), load_paper(), params)}["noise"]
    assert rows(claim)[D64].verdict == NOT_RUN and rows(claim)[D64].note == f"dvc repro noise@{D64}"
    assert claim.overall == {"toy": SUPPORTED}  # the rows that ran decide


def test_noise_claim_is_also_tested_at_the_baselines_relative_sigma_star(tmp_path, monkeypatch):
    """The fixture's baseline keeps exp(−σ/0.05) of its margin over chance: it has lost half by σ = 0.04 (the
    relative σ* = the paper's here), 80 % only by σ = 0.1, where the fixture's gain has shrunk (growth −0.3 G)."""
    claim = claims_of(tmp_path / "half", fake_params())["noise"]
    sweep = json.loads((tmp_path / f"half/results/noise/{D16}/sweep.json").read_text())
    e = rows(claim)[f"{D16}: relative σ* = 0.04"]
    assert e.verdict == SUPPORTED and e.effect == estimate(sweep["growth_by_sigma"][3])
    assert e.numbers["baseline's loss of its margin over chance"].startswith(
        f"{(sweep['baseline'][0] - sweep['baseline'][3]) / (sweep['baseline'][0] - 0.1):.0%}")
    with_plan(monkeypatch, "noise", "relative_loss", 0.8)
    claim = claims_of(tmp_path / "most", fake_params(), gain={D16: 0.05})["noise"]
    e = rows(claim)[f"{D16}: relative σ* = 0.1"]
    assert e.effect.mean < 0 and e.verdict == CONTRADICTED
    assert rows(claim)[f"{D16}: paper's σ* = 0.04"].verdict == SUPPORTED
    assert claim.overall == {"toy": INCONCLUSIVE}  # the two σ* disagree: the family is mixed
    dims = rows(claims_of(tmp_path / "dims", fake_params(), gain={D16: 0.02, D64: 0.04})["dimension"])
    assert f"fashion-mnist: {D64} − {D16}, relative σ* = 0.1" in dims


def test_a_baseline_that_never_loses_enough_leaves_the_relative_row_not_run(tmp_path, monkeypatch):
    with_plan(monkeypatch, "noise", "relative_loss", 0.999)
    claim = claims_of(tmp_path, fake_params())["noise"]
    e = rows(claim)[f"{D16}: relative σ*"]
    assert e.verdict == NOT_RUN and "add larger σ to noise.sigmas" in e.note
    assert claim.overall == {"toy": SUPPORTED}  # the paper's σ* rows decide


# ---------------------------------------------------------------- dimension


def test_dimension_claim_compares_the_gains_of_two_dimensions_on_the_same_images(tmp_path):
    claim = claims_of(tmp_path, fake_params(), gain={D16: 0.02, D64: 0.02})["dimension"]
    assert [e.row for e in claim.evidence] == [f"fashion-mnist: {D64} − {D16}, clean",
                                               f"fashion-mnist: {D64} − {D16}, paper's σ* = 0.04",
                                               f"fashion-mnist: {D64} − {D16}, relative σ* = 0.04"]
    assert {e.verdict for e in claim.evidence} == {INCONCLUSIVE}
    assert all(abs(e.effect.mean) < 1e-9 for e in claim.evidence)
    claim = claims_of(tmp_path / "b", fake_params(), gain={D16: 0.02, D64: 0.04})["dimension"]
    assert {e.verdict for e in claim.evidence} == {SUPPORTED}
    assert claim.evidence[0].effect.mean == pytest.approx(0.02, abs=1e-9)


# ---------------------------------------------------------------- verdicts recomputable from the per-image arrays

RECOMPUTED = ("clean_gain", "noise", "query_space", "true_class", "lesions", "dimension", "controls")  # all of them
CONTROL_GAINS = {"more-training": 0.0, "vector-scaling": 0.0, "logits": -0.005, "residual-head": 0.005}


def with_controls(params: dict) -> dict:
    """The fixture params with the d = 16 run's controls (CONTROL_GAINS' methods)."""
    params["controls"] = {D16: {"backbone": "toy-fmnist", "dataset": "fashion-mnist", "methods": list(CONTROL_GAINS),
                                "test_subset": 0}}
    return params


def arrays_of(res) -> list:
    """Every per-image archive the stages write (pipeline/outputs.py: the npz outputs)."""
    return sorted(p for p in res.rglob("*.npz"))


def test_the_report_rebuilds_every_verdict_from_the_per_image_arrays_alone(tmp_path):
    """Every interval of every JSON output scrambled: each claim's rows, verdicts and effects are the same, rebuilt
    from the arrays; with the arrays gone the report reads the scrambled JSON and says which arrays are missing."""
    params = with_controls(fake_params())
    write_fake_outputs(tmp_path, params, control_gains=CONTROL_GAINS)
    judged = {c.id: c for c in evaluate_claims(load_outputs(params, tmp_path), load_paper(), params)}
    assert tuple(judged) == RECOMPUTED  # every claim the report judges
    res = tmp_path / "results"
    for path in res.rglob("*.json"):
        path.write_text(json.dumps(scrambled(json.loads(path.read_text()))))
    out = load_outputs(params, tmp_path)
    arrays = [str(p.relative_to(tmp_path)) for p in arrays_of(res)]
    assert sorted(out.from_arrays) == arrays and {a.split("/")[1] for a in arrays} == {
        "noise", "lesions", "embedding", "maps", "controls", "baselines"}  # dims: from the noise arrays
    assert out.arrays_missing == []
    rebuilt = {c.id: c for c in evaluate_claims(out, load_paper(), params)}
    for cid in RECOMPUTED:
        assert [(e.row, e.verdict, e.effect) for e in rebuilt[cid].evidence] == \
               [(e.row, e.verdict, e.effect) for e in judged[cid].evidence], cid
        assert {e.verdict for e in judged[cid].evidence} - {NOT_RUN, NOT_APPLICABLE} == {SUPPORTED} or cid == "lesions"
    for path in arrays_of(res):
        path.unlink()
    blind = load_outputs(params, tmp_path)
    assert blind.from_arrays == []
    missing = "\n".join(blind.arrays_missing)  # the report names every output left with its JSON's intervals
    assert all(f"{a} missing" in missing for a in arrays) and "results/dims.json" in missing
    assert all(f"results/train-attn/{k}/metrics.json: clean gain read from the JSON" in missing for k in (D16, D64))
    blind_claims = {c.id: c for c in evaluate_claims(blind, load_paper(), params)}
    for cid in RECOMPUTED:  # the scrambled JSON, now read: every tested row's effect is the wrong one (or below a bar)
        effects = [e.effect for e in blind_claims[cid].evidence if e.effect is not None]
        assert effects and all(e.mean <= -0.5 for e in effects), cid
    assert {e.verdict for e in blind_claims["clean_gain"].evidence} == {CONTRADICTED}


def test_an_archive_that_does_not_match_its_json_is_refused_naming_it(tmp_path):
    from pipeline.report.load import ReportInputError

    params = with_controls(fake_params())
    write_fake_outputs(tmp_path, params, control_gains=CONTROL_GAINS)
    path = tmp_path / f"results/controls/{D16}.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez_compressed(path, **{**arrays, "methods": arrays["methods"][::-1]})
    with pytest.raises(ReportInputError, match=rf"{path}: methods .* do not match its JSON's"):
        load_outputs(params, tmp_path)
    np.savez_compressed(path, **{k: v for k, v in arrays.items() if k != "gattanet"})
    with pytest.raises(ReportInputError, match=rf"{path}: lacks the array\(s\) gattanet"):
        load_outputs(params, tmp_path)


# ---------------------------------------------------------------- the helpers the rows are built with


def test_estimate_reads_back_what_a_stage_wrote():
    rng = np.random.default_rng(0)
    est = effect_ci([(1.0, rng.choice([-1.0, 0.0, 1.0], size=(3, 500))), (-0.5, rng.random((2, 500)))])
    assert estimate(json.loads(json.dumps(est.as_dict()))) == est


def test_shifted_moves_the_interval_and_decided_judges_it():
    est = effect_ci([(1.0, np.random.default_rng(1).random((3, 800)) < 0.8)])  # a rate near 80 %
    above, at = shifted(est, -0.6), shifted(est, -est.mean)
    assert above.half_width == pytest.approx(est.half_width) and above.mean == pytest.approx(est.mean - 0.6)
    assert decided("r", "toy", above, {}).verdict == SUPPORTED
    assert decided("r", "toy", at, {}).verdict == INCONCLUSIVE
    assert decided("r", "toy", shifted(est, -0.95), {}).verdict == CONTRADICTED
    assert decided("r", "toy", shifted(est, -0.95), {}, direction=-1).verdict == SUPPORTED
