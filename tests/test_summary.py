"""The Reproducibility Summary and how a verdict reaches the reader: a new claim or row (another branch's kind of
test, on another scale) shows in the headline, the forest plot and the claims table without a template change;
committed profile runs are listed by their headline; a run whose outputs are not committed is not re-rendered."""

import numpy as np
import pytest
import yaml

from gattanet.analysis.stats import SUPPORTED, effect_ci
from gattanet.errors import InputError
from pipeline.report import build
from pipeline.report.claims import Claim, Evidence, ci_text, evaluate_claims
from pipeline.report.analysis_plan import load_plan
from pipeline.report.committed import NO_HEADLINE, committed_runs, main, rerender
from pipeline.report.summary import forest_rows, headline_line
from tests.report_fixtures import fake_params, judge, render_report, write_fake_outputs
from tests.test_report import PROVENANCE, ClaimRows, _html_of


def _new_claim() -> Claim:
    """A claim the report has never seen: one row, non-inferiority on a relative scale, with a margin."""
    est = effect_ci([(1.0, np.full((3, 500), 0.05) + np.linspace(-0.02, 0.02, 500))])
    row = Evidence("toy-fmnist-d16: <b>new</b> row", "toy", SUPPORTED, {"effect (95 % CI)": ci_text(est)},
                   test="non-inferior", effect=est, paper_size=0.123, margin=0.02, unit="relative error reduction")
    return Claim("new", "A claim added by another branch", "the paper's words", "its rule <i>text</i>", [row],
                 multiplicity="its multiplicity text")


@pytest.fixture(scope="module")
def with_new_claim(tmp_path_factory):
    root = tmp_path_factory.mktemp("new")
    params = fake_params()
    write_fake_outputs(root, params)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build, "evaluate_claims", lambda *a: [*evaluate_claims(*a), _new_claim()])
        index = render_report(params, root, root / "reports", PROVENANCE)
    return index


def test_a_new_claim_reaches_the_claims_table_headline_and_forest_plot(with_new_claim):
    html, page = _html_of(with_new_claim)
    table = ClaimRows(html).table()
    new = next(t for t in table if t["head"].startswith("A claim added by another branch"))
    assert new["rows"][0][:2] == ["toy-fmnist-d16: <b>new</b> row", "non-inferior"]  # escaped, shown as text
    assert "<b>new</b>" not in html and "&lt;b&gt;new&lt;/b&gt;" in html
    assert "its rule <i>text</i>" not in html
    summary = html[html.index('id="summary"'):html.index('id="claims"')]
    assert "A claim added by another branch (1 of 1 rows" in summary.replace("&lt;", "<").replace("&gt;", ">")
    rows = forest_rows([_new_claim()])
    assert rows[0]["label"].endswith("(relative error reduction)") and rows[0]["paper_size"] == 0.123


def test_headline_line_counts_claims_and_quotes_the_clean_gain(tmp_path):
    params = fake_params()
    write_fake_outputs(tmp_path, params)
    claims = judge(params, tmp_path)
    line = headline_line(claims, {"extensions − GAttANet": ["better", "inconclusive", "inconclusive"]})
    verdicts = [c.verdict for c in claims if any(e.verdict in ("supported", "contradicted", "inconclusive")
                                                 for e in c.evidence)]
    counts, tested = [verdicts.count(w) for w in ("supported", "contradicted")], len(verdicts)
    assert tested >= 6 and counts[0] >= 6  # the fixture's effects, well clear of their cuts
    assert line.startswith(f"claims: {counts[0]} supported, {counts[1]} contradicted, "
                           f"{tested - sum(counts)} undecided of {tested} tested; clean gain (")
    assert line.endswith("extensions − GAttANet: 2 inconclusive, 1 better")


def test_committed_runs_are_listed_with_their_headline(tmp_path):
    """A reports/<profile>/ with params.yaml and index.html is linked with its headline <meta>, or says it has none."""
    params = fake_params()
    write_fake_outputs(tmp_path, params)
    run = tmp_path / "reports" / "backbones"
    render_report(params, tmp_path, run, PROVENANCE)
    (run / "params.yaml").write_text(yaml.safe_dump(params))
    old = tmp_path / "reports" / "extensions"
    old.mkdir()
    (old / "params.yaml").write_text("profile: extensions\n")
    (old / "index.html").write_text("<html><head></head><body>before the summary</body></html>")
    runs = committed_runs(tmp_path / "reports")
    assert [r["profile"] for r in runs] == ["backbones", "extensions"]
    assert runs[0]["href"] == "backbones/index.html" and runs[0]["headline"].startswith("claims: ")
    assert runs[1]["headline"] == NO_HEADLINE


def test_a_run_without_its_attention_outputs_is_not_rerendered(tmp_path):
    folder = tmp_path / "reports" / "extensions"
    (folder / "results" / "extensions").mkdir(parents=True)
    (folder / "params.yaml").write_text("profile: extensions\n")
    (folder / "index.html").write_text("as made")
    with pytest.raises(InputError, match="cannot be re-rendered"):
        rerender(folder, tmp_path, load_plan())
    assert (folder / "index.html").read_text() == "as made"


def test_a_committed_run_is_rerendered_from_its_own_folder(tmp_path):
    params = fake_params()
    folder = tmp_path / "reports" / "backbones"
    write_fake_outputs(folder, params)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    index = rerender(folder, tmp_path, load_plan())
    html = index.read_text()
    assert index == folder / "index.html" and 'id="summary"' in html and (folder / "figures/forest.png").exists()
    assert "re-rendered from the outputs committed under reports/backbones/" in html


def test_a_committed_params_file_that_no_longer_validates_fails_the_rerender(tmp_path, capsys):
    """Re-rendering validates each committed params.yaml as a run's: one the schema now refuses is an error (exit 1,
    naming the file and the key), not rendered from unchecked settings."""
    params = fake_params()
    folder = tmp_path / "backbones"
    write_fake_outputs(folder, params)
    params["noise"]["peak_sigma"] = 0.5  # not one of noise.sigmas
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    (folder / "index.html").write_text("as made")
    assert main([], tmp_path) == 1
    err = capsys.readouterr().err
    assert f"error: {folder / 'params.yaml'}: noise.peak_sigma" in err
    assert (folder / "index.html").read_text() == "as made"
