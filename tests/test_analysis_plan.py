"""The analysis plan (analysis_plan.yaml, pipeline/report/analysis_plan.py): the claims read every threshold from
it, so changing the file changes verdicts on synthetic outputs; the report prints it whole with its sha256 and
lists the rules changed after results existed; Holm's correction within a claim; a bad plan is refused in one
line with nothing written."""

import hashlib
from pathlib import Path

import pytest
import yaml
from markupsafe import escape
from typer.testing import CliRunner

from gattanet.analysis.stats import CONTRADICTED, INCONCLUSIVE, SUPPORTED, holm_adjusted
from pipeline.cli import app
from pipeline.report import analysis_plan
from pipeline.report.analysis_plan import CHECKS, PlanError, load_plan, parse_plan
from tests.helpers import with_param
from tests.report_fixtures import OPTIONAL, fake_params, judge, render_report, write_fake_outputs

D16, D64 = "toy-fmnist-d16", "toy-fmnist-d64"
COMMITTED = Path(__file__).resolve().parents[1] / "analysis_plan.yaml"
PROVENANCE = {"commit": "test", "date": "2021-04-12T00:00:00+00:00", "devices": ["cpu"],
              "versions": {"python": "3"}, "stages": [], "params_yaml": "profile: default\n"}


def plan_file(tmp_path, monkeypatch, *changes) -> str:
    """Write the committed plan with `changes` ((dotted key, value), ...) to a file the report reads; its text."""
    data = load_plan(COMMITTED).data
    for dotted, value in changes:
        data = with_param(data, dotted, KeyError if value is None else value)
    path = tmp_path / "analysis_plan.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    monkeypatch.setattr(analysis_plan, "DEFAULT_PATH", path)
    return path.read_text()


def judged(root, params, **kw) -> dict:
    write_fake_outputs(root, params, **kw)
    return {c.id: c for c in judge(params, root)}


def verdicts(claim) -> dict:
    return {e.row: e.verdict for e in claim.evidence}


# ---------------------------------------------------------------- the hash


SINGLE = {"overall.supported": ("any", "all"), "overall.contradicted": ("every", "all"),  # one value allowed
          "claims.noise.sigma_star": ("0.035", 0.035), "version": (1, 3), "primary.claim": ("noise", "gain"),
          "related_work.family": ("profile", "all"), "claims.noise.visible_up_to": ("params", 0.2),
          "claims.true_class.interval": ("wald", "t"), "claims.across_backbones.df": ("satterthwaite", 2)}


def other_allowed(dotted: str, value):
    """A different value that CHECKS allows for this key."""
    alternatives = {"multiplicity": "none", "claims.controls.judged": ["logits"], "claims.dimension.dims": [16, 32],
                    "primary.attn_dim": 64}
    if isinstance(value, bool):
        return not value
    if isinstance(value, float):
        return round(value * 0.9, 6)
    return alternatives[dotted]


def test_every_key_is_either_free_or_single_valued():
    assert set(SINGLE) <= set(CHECKS)
    for dotted in set(CHECKS) - set(SINGLE):
        assert other_allowed(dotted, load_plan().get(*dotted.split("."))) is not None, dotted


@pytest.mark.parametrize("dotted", sorted(set(CHECKS) - set(SINGLE)))
def test_the_hash_changes_when_any_threshold_does(tmp_path, monkeypatch, dotted):
    committed = load_plan()
    value = committed.get(*dotted.split("."))
    new = other_allowed(dotted, value)
    same = parse_plan(yaml.safe_dump(committed.data, allow_unicode=True, sort_keys=False))  # only re-dumped
    text = plan_file(tmp_path, monkeypatch, (dotted, new))
    changed = load_plan()
    assert changed.get(*dotted.split(".")) == new
    assert changed.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert changed.sha256 not in (committed.sha256, same.sha256)


@pytest.mark.parametrize("dotted", sorted(SINGLE))
def test_a_key_with_one_allowed_value_refuses_any_other(tmp_path, monkeypatch, dotted):
    """The rules fixed in code (the overall rule, σ*'s source, the primary claim, ...): the plan names them, and any
    other value is refused in one line naming the key."""
    for i, other in enumerate(SINGLE[dotted]):
        plan_file(tmp_path / str(i), monkeypatch, (dotted, other))
        with pytest.raises(PlanError) as err:
            load_plan()
        assert f"{dotted} is {other!r}; allowed: " in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- the claims read the plan


@pytest.mark.parametrize("dotted, value, claim, row, before, after, outputs", [
    # the k-NN on q reaches 83 % (chance 10 %): above the bar halfway to perfect, below one 95 % of the way
    ("claims.query_space.bar_fraction", 0.95, "query_space", f"{D16}: classes", SUPPORTED, CONTRADICTED, {}),
    ("claims.true_class.typical_rate", 0.95, "true_class", D16, SUPPORTED, CONTRADICTED, {}),
    # a gain of +0.8 pt over 4,000 images is surely above 0 at 95 %, not at 99.99 %
    ("level", 0.9999, "clean_gain", D16, SUPPORTED, INCONCLUSIVE, {"gain": {D16: 0.008, D64: 0.03}}),
])
def test_a_change_in_the_plan_changes_the_verdict(tmp_path, monkeypatch, dotted, value, claim, row, before, after,
                                                  outputs):
    params = fake_params()
    assert verdicts(judged(tmp_path / "a", params, **outputs)[claim])[row] == before
    plan_file(tmp_path, monkeypatch, (dotted, value))
    assert verdicts(judged(tmp_path / "b", params, **outputs)[claim])[row] == after


def test_the_papers_stated_gain_contradicts_only_while_the_plan_says_so(tmp_path, monkeypatch):
    params = fake_params("cifar10")  # the paper's dataset: it states +2.06 pts for the toy at d = 16
    run = next(iter(params["attention"]))
    outputs = {"gain": {k: 0.01 for k in params["attention"]}, "skip": OPTIONAL}
    assert verdicts(judged(tmp_path / "a", params, **outputs)["clean_gain"])[run] == CONTRADICTED
    plan_file(tmp_path, monkeypatch, ("claims.clean_gain.paper_size", False))
    assert verdicts(judged(tmp_path / "b", params, **outputs)["clean_gain"])[run] == SUPPORTED


# ---------------------------------------------------------------- Holm within a claim


def test_holm_makes_contradicted_rows_inconclusive_that_pass_only_one_at_a_time(tmp_path, monkeypatch):
    """Two gains each surely below 0 alone (α/2 < p < α) but not both, by Holm: min p · 2 ≥ α. Contradiction is a
    union over the claim's rows, so Holm corrects it; the same gains above 0 stay supported (intersection-union)."""
    params, outputs = fake_params(), {"gain": {D16: -0.0055, D64: -0.0055}, "skip": OPTIONAL}
    plan_file(tmp_path, monkeypatch, ("multiplicity", "none"))
    alone = judged(tmp_path / "a", params, **outputs)["clean_gain"]
    alpha = load_plan().alpha_one_sided
    p = [e.p[1] for e in alone.evidence]
    assert all(alpha / 2 < x < alpha for x in p), p  # the setting this test needs
    assert set(verdicts(alone).values()) == {CONTRADICTED} and "none" in alone.multiplicity
    plan_file(tmp_path, monkeypatch, ("multiplicity", "holm"))
    holm = judged(tmp_path / "b", params, **outputs)["clean_gain"]
    assert set(verdicts(holm).values()) == {INCONCLUSIVE} and holm.overall == {"toy": INCONCLUSIVE}
    for e, adj in zip(holm.evidence, holm_adjusted(p)):
        assert f"adjusted p = {adj:.3g}" in e.note and "contradicted before Holm's correction" in e.note
    assert "Holm's step-down over the claim's 2 tested rows" in holm.multiplicity
    assert "intersection-union" in holm.multiplicity
    up = judged(tmp_path / "c", params, gain={D16: 0.0055, D64: 0.0055}, skip=OPTIONAL)["clean_gain"]
    assert set(verdicts(up).values()) == {SUPPORTED} and up.overall == {"toy": SUPPORTED}


def test_holm_leaves_rows_that_pass_it_and_never_promotes_one(tmp_path):
    claims = judged(tmp_path, fake_params(), gain={D16: 0.02, D64: 0.0})  # the committed plan: holm
    assert verdicts(claims["clean_gain"]) == {D16: SUPPORTED, D64: INCONCLUSIVE}
    assert all("Holm" in c.multiplicity or "no tested rows" in c.multiplicity for c in claims.values())


# ---------------------------------------------------------------- the report prints it


def test_the_report_prints_the_plan_with_its_hash_and_the_rules_changed_after_results(tmp_path, monkeypatch):
    params = fake_params()
    write_fake_outputs(tmp_path, params, skip=OPTIONAL)
    html = render_report(params, tmp_path, tmp_path / "reports", PROVENANCE).read_text()
    committed = load_plan()
    assert committed.sha256 == hashlib.sha256(analysis_plan.DEFAULT_PATH.read_bytes()).hexdigest()
    assert committed.sha256 in html and 'id="analysis-plan"' in html
    assert "relative_loss: 0.5" in html  # the text itself, as committed
    for d in committed.data["deviations"]:
        assert d["commit"] in html and d["rule"] in html
        assert str(escape(d["reason"])) in html and str(escape(d["before"])) in html
    assert str(escape("Holm's step-down over the claim's")) in html
    plan_file(tmp_path, monkeypatch, ("claims.lesions.share", 0.4))
    html = render_report(params, tmp_path, tmp_path / "reports", PROVENANCE).read_text()
    assert load_plan().sha256 in html and committed.sha256 not in html


@pytest.mark.parametrize("change, message", [
    (("level", 1.5), "level is 1.5; allowed: a number in (0, 1)"),
    (("multiplicity", "bonferroni"), "multiplicity is 'bonferroni'; allowed: holm or none"),
    (("claims.query_space.bar_fraction", None), "claims.query_space.bar_fraction is missing"),
    (("deviations", [{"rule": "level", "commit": "abc"}]), "deviations must be a list of {rule, commit, before"),
])
def test_a_bad_plan_is_refused_in_one_line_and_writes_nothing(tmp_path, monkeypatch, change, message):
    params = fake_params()
    write_fake_outputs(tmp_path, params, skip=OPTIONAL)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/index.html").write_text("previous report")
    plan_file(tmp_path, monkeypatch, change)
    with pytest.raises(PlanError) as err:
        render_report(params, tmp_path, tmp_path / "reports", PROVENANCE)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert (tmp_path / "reports/index.html").read_text() == "previous report"


def test_the_cli_prints_a_bad_plan_as_one_error_line(tmp_path, monkeypatch):
    params = fake_params()
    write_fake_outputs(tmp_path, params, skip=OPTIONAL)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    plan_file(tmp_path, monkeypatch, ("power", 0))
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["stage", "report", "--params", "params.yaml"])
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines() == [r.output.strip()] and "power is 0; allowed: a number in (0, 1)" in r.output
    assert not (tmp_path / "reports/index.html").exists()


def test_the_default_report_says_its_verdicts_hold_for_one_backbone_and_names_the_lifting_command(tmp_path):
    params = fake_params()
    write_fake_outputs(tmp_path, params, skip=OPTIONAL)
    html = render_report(params, tmp_path, tmp_path / "reports", PROVENANCE).read_text()
    assert "These verdicts hold for the one pretrained backbone" in html
    assert "gattanet-cli profile backbones &amp;&amp; dvc repro" in html
