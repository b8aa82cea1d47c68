"""The HTML report: builds from (fake) stage outputs, shows every figure, escapes params text, shows a
verdict per backbone family with the intervals behind it, sets Table 1 beside the paper (accuracies only on
the paper's own dataset, gains elsewhere), compares GAttANet with the related attention modules, says
"not run" for what did not run, names the file of a malformed output, and renders in Chromium. The
verdict rules themselves are tested in test_claims.py."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gattanet.adapters.budget import BUDGET_TOL

from pipeline.config import validate
from pipeline.report import figures
from pipeline.report.build import collect_provenance
from pipeline.report.claims import (FULL_PROFILE_COMMAND, INCONCLUSIVE, NOT_RUN, SUPPORTED, ci_text, estimate, evaluate_claims,
                                    pct, pts)
from pipeline.report.load import ReportInputError, load_paper
from pipeline.report.costs import baselines_macs
from pipeline.report.tables import (BASELINE_METHODS, accuracy_ci, baselines_section, count, deviations, left_out,
                                    table1)
from tests.helpers import ROOT
from tests.report_fixtures import OPTIONAL, add_resnet_run, fake_params, judge, loaded, render_report, write_fake_outputs

FIGURE_IDS = ("fig2a", "fig2b", "fig3", "fig4a", "fig4b", "fig4c")
PROVENANCE = {"commit": "test", "date": "2021-04-12T00:00:00+00:00", "devices": ["cpu"],
              "versions": {"python": "3"}, "stages": [], "params_yaml": "profile: default\n"}


class Page(HTMLParser):
    """Collects <img> src, element ids, <script> elements and the text of an HTML page."""

    def __init__(self, html: str):
        super().__init__()
        self.imgs, self.ids, self.scripts, self.text, self.attrs = [], set(), 0, [], {}
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.ids.add(a.get("id"))
        if tag == "img":
            self.imgs.append(a["src"])
        if tag == "script":
            self.scripts += 1
        if tag == "body":
            self.attrs = a

    def handle_data(self, data):
        self.text.append(data)


class Rows(HTMLParser):
    """The cell texts of each body row of the first <table> whose class is `cls`."""

    def __init__(self, html: str, cls: str):
        super().__init__()
        self.cls, self.rows, self.state, self.cell = cls, [], "before", None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "table" and self.state == "before" and dict(attrs).get("class") == self.cls:
            self.state = "in"
        elif self.state == "in" and tag == "tbody":
            self.state = "body"
        elif self.state == "body" and tag == "tr":
            self.rows.append([])
        elif self.state == "body" and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if self.state == "body" and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(" ".join(" ".join(self.cell).split()))
            self.cell = None
        elif self.state == "body" and tag == "table":
            self.state = "after"

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


VERDICT_WORDS = ("better", "worse", "inconclusive")


def _html_of(index: Path) -> tuple[str, Page]:
    html = index.read_text()
    return html, Page(html)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One full report from the complete fixture (figures drawn once for the module)."""
    root = tmp_path_factory.mktemp("run")
    params = fake_params()
    params["report"]["title"] = "<script>alert(1)</script> report"
    write_fake_outputs(root, params)
    index = render_report(params, root, root / "reports", PROVENANCE)
    return root, params, index


def test_report_builds_with_every_figure_as_an_image(built):
    root, _, index = built
    html, page = _html_of(index)
    assert index == root / "reports" / "index.html"
    for fig in FIGURE_IDS:
        assert fig in page.ids
        png = f"figures/{fig}.png"
        assert png in page.imgs, f"{fig} is not shown as an <img>"
        with Image.open(index.parent / png) as im:  # exists and decodes
            im.load()
            assert min(im.size) > 50
        assert (index.parent / f"figures/{fig}.svg").read_text().lstrip().startswith("<?xml")
    text = " ".join(page.text)
    assert "toy model, CIFAR10" in text and "dataset substituted: Fashion-MNIST for CIFAR10" in text
    assert "ResNet50, ImageNet-1k" in text and "gattanet-cli profile paper && dvc repro" in text
    assert "69.76 %" in text and "68.43 %" in text  # torchvision beside the paper's baseline


def test_params_text_is_escaped_and_page_has_no_script(built):
    _, _, index = built
    html, page = _html_of(index)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>" not in html
    assert page.scripts == 0


EXTERNAL = re.compile(  # a URL the browser would fetch from elsewhere: absolute (scheme:) or protocol-relative (//)
    r"""(?:\b(?:src|href)\s*=\s*["']?|url\(\s*["']?|@import\s+(?:url\(\s*)?["']?)\s*((?!data:)[a-z][a-z0-9+.-]*:|//)""",
    re.IGNORECASE)


def external_urls(html: str) -> list[str]:
    """Every src, href, url() or @import of the page that names an absolute or protocol-relative URL (data: aside)."""
    return [html[m.start():m.end() + 40] for m in EXTERNAL.finditer(html)]


def test_report_makes_no_network_request(built):
    """No src, href, url() or @import of the rendered page points off the page's own folder."""
    _, _, index = built
    assert not external_urls(index.read_text())


def test_an_external_stylesheet_in_the_template_fails_the_network_check(built, tmp_path, monkeypatch):
    """The check bites: the template with one CDN stylesheet (or a protocol-relative font) renders a page it flags."""
    from pipeline.report import build

    root, params, _ = built
    original = build.TEMPLATES
    for link in ('<link rel="stylesheet" href="https://cdn.example.org/x.css">',
                 "<style>@import '//fonts.example.org/f.css';</style>", '<img src="HTTP://example.org/a.png">'):
        templates = tmp_path / link[1:5] / "templates"
        shutil.copytree(original, templates)
        page = templates / "index.html.j2"
        page.write_text(page.read_text().replace("</head>", f"{link}\n</head>"))
        monkeypatch.setattr(build, "TEMPLATES", templates)
        index = render_report(params, root, tmp_path / link[1:5] / "out", PROVENANCE)
        assert len(external_urls(index.read_text())) == 1, link


def _rows_of(html: str, run: str) -> tuple[list[str], list[str], list[str]]:
    """Table 1's three rows of one run: this run, the closest paper row, and the comparison row."""
    rows = Rows(html, "table1").rows
    i = next(i for i, r in enumerate(rows) if r[0].startswith(f"this run {run}"))
    return rows[i], rows[i + 1], rows[i + 2]


def _metrics(root: Path, run: str) -> dict:
    return json.loads((root / f"results/train-attn/{run}/metrics.json").read_text())


class ClaimRows(HTMLParser):
    """The claims table: per claim (its head row's text, outside <details>) the cells of its rows, by column class."""

    def __init__(self, html: str):
        super().__init__()
        self.claims, self.state, self.cell, self.details = [], "before", None, 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("class") == "claims" and self.state == "before":
            self.state = "in"
        elif self.state != "in":
            return
        elif tag == "details":
            self.details += 1
        elif tag == "tr" and a.get("class") == "claim-head":
            self.claims.append({"head": [], "rows": []})
            self.cell = self.claims[-1]["head"]
        elif tag == "tr" and a.get("class") == "row":
            self.claims[-1]["rows"].append([])
        elif tag == "td" and self.claims and self.claims[-1]["rows"]:
            self.cell = []
            self.claims[-1]["rows"][-1].append(self.cell)

    def handle_endtag(self, tag):
        if self.state != "in":
            return
        if tag == "details":
            self.details -= 1
        elif tag in ("td", "tr"):
            self.cell = None
        elif tag == "table":
            self.state = "after"

    def handle_data(self, data):
        head = self.claims and self.cell is self.claims[-1]["head"]
        if self.cell is not None and not (head and self.details):  # a head row's text without its rules
            self.cell.append(data)

    def table(self) -> list[dict]:
        """[{head: text, rows: [[row, test, effect, verdict], ...]}]: each cell's text, whitespace collapsed."""
        text = lambda parts: " ".join(" ".join(parts).split())
        return [{"head": text(c["head"]), "rows": [[text(cell) for cell in r] for r in c["rows"]]} for c in self.claims]


EFFECT_CI = re.compile(r"^[+-]\d+\.\d+ (pts|%) \[[+-]?\d+\.\d+ (pts|%), [+-]?\d+\.\d+ (pts|%)\]$")


def test_claims_table_gives_each_row_its_test_effect_interval_and_verdict(built):
    """Per claim a head row (title and its verdict per backbone family), then one row per evidence row: every row
    that was judged carries its test label and its effect with its 95 % CI; rows not run say so."""
    root, params, index = built
    html, page = _html_of(index)
    claims = judge(params, root)
    table = ClaimRows(html).table()
    assert [t["head"].split(" toy:")[0].split(" not run")[0] for t in table] == [c.title for c in claims]
    assert len(table) == 10 and "toy: supported" in table[0]["head"], [t["head"] for t in table]
    assert sum("toy: supported" in t["head"] for t in table) >= 6  # the fixture's effects, well clear of their cuts
    assert "not run" in table[9]["head"]  # the controls claim: the fixture params run no controls
    for t, c in zip(table, claims):
        assert len(t["rows"]) == len(c.evidence)
        for (row, test, effect, verdict), e in zip(t["rows"], c.evidence):
            assert verdict.startswith(e.verdict), (row, verdict)
            if e.effect is not None:
                assert test == e.test and test, row
                assert EFFECT_CI.match(effect), (row, effect)
            else:
                assert effect == "—" and e.verdict in ("not run", "not applicable"), row
    text = " ".join(" ".join(page.text).split())
    for run in params["attention"]:
        assert ci_text(estimate(_metrics(root, run)["gain"])) in text  # the clean-gain row's effect with its CI ...
    assert "3 seeds × 4,000 test images" in text  # ... and what the interval was made of (claims in detail)


class Outside(HTMLParser):
    """The page's text outside every <details> element."""

    def __init__(self, html: str):
        super().__init__()
        self.depth, self.text = 0, []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.depth += tag == "details"

    def handle_endtag(self, tag):
        self.depth -= tag == "details"

    def handle_data(self, data):
        if not self.depth:
            self.text.append(data)


def test_rule_and_multiplicity_text_only_inside_details(built):
    """The rules are on demand: no claim's rule, multiplicity text or the overall rule outside a <details>, and each
    is written inside one."""
    from pipeline.report.claims import OVERALL_RULE

    root, params, index = built
    html = index.read_text()
    claims = judge(params, root)
    outside = " ".join(" ".join(Outside(html).text).split())
    inside = " ".join(" ".join(Page(html).text).split())
    for c in claims:
        for text in (c.rule, c.multiplicity):
            words = " ".join(text.split())
            assert words in inside and words not in outside, words[:80]
    assert " ".join(OVERALL_RULE.split()) not in outside


def test_summary_is_the_first_screen_with_scope_headline_forest_plot_and_compute(built):
    """The Reproducibility Summary comes before every other section: scope, headline with numbers, the forest plot
    (one row per judged claim row), what was easy and difficult, and the compute spent."""
    root, params, index = built
    html, page = _html_of(index)
    assert html.index('id="summary"') < html.index('id="claims"') < html.index('id="table1"')
    summary = html[html.index('id="summary"'):html.index('id="claims"')]
    for part in ("Scope", "What was easy", "What was difficult", "Compute spent", "claims tested", "Fashion-MNIST",
                 "seeds per attention run", "h of stage wall time"):
        assert part in summary, part
    assert "figures/forest.png" in page.imgs and 'class="headline"' in summary
    assert re.search(r"Of \d+ claims tested, \d+ (is|are) supported", summary)
    assert re.search(r"[+-]\d+\.\d+ pts \[", summary)  # numbers in the headline
    with Image.open(index.parent / "figures/forest.png") as im:
        assert im.size[1] > 300
    assert 'name="gattanet-headline"' in html  # the one-line headline the default report links profile runs by


def test_forest_plot_draws_every_judged_row_with_zero_paper_size_and_margin(built):
    """One CI line per judged row, the zero line, a diamond per row with a paper size, a band per row with a margin."""
    from pipeline.report.summary import forest_rows

    root, params, _ = built
    claims = judge(params, root)
    rows = forest_rows(claims)
    assert {r["group"] for r in rows} == {c.title for c in claims if any(e.effect is not None and e.verdict in
                                                                         ("supported", "contradicted", "inconclusive")
                                                                         for e in c.evidence)}
    rows[0] = {**rows[0], "paper_size": 0.02, "margin": 0.003}
    ax = figures.forest_plot(rows).axes[0]
    cis = [l for l in ax.lines if len(l.get_xdata()) == 2 and l.get_ydata()[0] == l.get_ydata()[1]]
    assert len(cis) == len(rows)
    assert any(list(l.get_xdata()) == [0, 0] for l in ax.lines)  # zero
    assert any(l.get_marker() == "D" and l.get_xdata()[0] == pytest.approx(2.0) for l in ax.lines)
    assert len(ax.collections) >= 1 + sum(r["margin"] is not None for r in rows)


def test_table1_on_a_substitute_dataset_compares_gains_not_accuracies(built):
    """Fashion-MNIST stands in for CIFAR: no accuracy is set against the paper's; the gain, its CI and the
    relative error reduction are shown beside the paper's gain (d = 16: the CIFAR10 row; d = 64: CIFAR100's)."""
    root, params, index = built
    html, _ = _html_of(index)
    paper = {r["id"]: r for r in load_paper()["table1"]}
    cifar10_gain = paper["toy-cifar10"]["gattanet_acc"] - paper["toy-cifar10"]["base_acc"]
    assert not any(r[0] == "Δ this run − paper" for r in Rows(html, "table1").rows)
    d16, d64 = params["attention"]
    cifar10_rel = f"{100 * cifar10_gain / (1 - paper['toy-cifar10']['base_acc']):.1f} %"
    for run, ref, paper_rel in ((d16, "toy-cifar10", cifar10_rel),
                                (d64, "toy-cifar100", "7.4 % (from the stated gain)")):  # +3.5 pts at 52.54 %
        m = _metrics(root, run)
        gain = estimate(m["gain"])
        ours, theirs, compare = _rows_of(html, run)
        assert f"dataset substituted: Fashion-MNIST for {paper[ref]['dataset_label']}" in ours[0]
        assert ours[4] == pct(m["baseline_acc"]) and ours[7] == pct(m["gattanet_acc"])
        assert ours[8].startswith(pts(gain.mean)) and f"[{pts(gain.low)}, {pts(gain.high)}]" in ours[8]
        here = 100 * gain.mean / (1 - m["baseline_acc"])
        assert f"error rate −{here:.1f} % (relative; gain/error 95 % CI [" in ours[8]
        assert theirs[0] == "paper (closest row)" and theirs[1] == f"toy model, {paper[ref]['dataset_label']}"
        assert theirs[-1] == paper[ref]["gain"]["text"]  # the paper's gain, beside ours
        assert compare[0] == "gain: this run vs paper" and len(compare) == 3  # no difference of accuracies
        assert compare[1] == ("different datasets: accuracies are not compared; relative error reduction here "
                              f"{here:.1f} %, in the paper {paper_rel}")
    # +2 pts here against the paper's +2.06; +4 pts against "up to +3.5 points"
    assert _rows_of(html, d16)[2][2] == f"paper {pts(cifar10_gain)}: ours consistent with it"
    assert _rows_of(html, d64)[2][2] in ("consistent with the paper's range", "above the paper's range")


def test_table1_on_the_papers_own_dataset_shows_the_accuracy_differences(tmp_path):
    params = fake_params("cifar10")
    write_fake_outputs(tmp_path, params, skip=OPTIONAL)
    index = render_report(params, tmp_path, tmp_path / "reports", PROVENANCE)
    html, _ = _html_of(index)
    paper = next(r for r in load_paper()["table1"] if r["id"] == "toy-cifar10")
    for run in params["attention"]:
        m = _metrics(tmp_path, run)
        ours, theirs, delta = _rows_of(html, run)
        assert "dataset substituted" not in ours[0]
        assert theirs[1] == "toy model, CIFAR10" and theirs[3] == pct(paper["base_acc"])
        assert delta[0] == "Δ this run − paper"
        assert delta[2] == pts(m["baseline_acc"] - paper["base_acc"])        # accuracies: this run − paper
        assert delta[4] == pts(m["gattanet_acc"] - paper["gattanet_acc"])
        assert delta[5].startswith(f"paper {pts(paper['gattanet_acc'] - paper['base_acc'])}: ours")
    text = " ".join(" ".join(Page(html).text).split())
    assert "gain: this run vs paper" not in text
    not_run = table1(loaded(params, tmp_path), load_paper())["not_run"]
    assert "toy model, CIFAR10" not in [r["label"] for r in not_run]  # the paper's row ran here


def test_noise_figure_draws_each_curve_and_the_gain_with_its_ci_from_the_sweep(built):
    root, params, _ = built
    run = params["report"]["figures"]["fig2"]
    sweep = json.loads((root / f"results/noise/{run}/sweep.json").read_text())
    fig = figures.noise_curve(sweep, "test")
    top, bottom = fig.axes
    lines = {line.get_label(): line.get_ydata() for ax in (top, bottom) for line in ax.get_lines()}
    np.testing.assert_allclose(lines["baseline (backbone)"], 100 * np.asarray(sweep["baseline"]))
    np.testing.assert_allclose(lines["GAttANet (mean of 3 seeds)"], 100 * np.asarray(sweep["gattanet"]))
    np.testing.assert_allclose(lines["GAttANet − baseline"], [100 * g["mean"] for g in sweep["gain"]])
    band = bottom.collections[0].get_paths()[0].vertices[:, 1]
    lows, highs = [100 * g["low"] for g in sweep["gain"]], [100 * g["high"] for g in sweep["gain"]]
    assert band.min() == pytest.approx(min(lows)) and band.max() == pytest.approx(max(highs))


def test_missing_optional_outputs_say_not_run_with_the_command(tmp_path):
    params = fake_params()
    write_fake_outputs(tmp_path, params, skip=OPTIONAL)
    index = render_report(params, tmp_path, tmp_path / "reports", PROVENANCE)
    html, page = _html_of(index)
    assert page.imgs == ["figures/forest.png"]  # the clean gain's rows: train-attn is the one output every run has
    text = " ".join(page.text)
    assert text.count("not run") >= len(FIGURE_IDS)
    for command in ("dvc repro noise@toy-fmnist-d16", "dvc repro noise@toy-fmnist-d64", "dvc repro embed@toy-fmnist-d16",
                    "dvc repro maps@toy-fmnist-d16", "dvc repro lesions@toy-fmnist-d16", "dvc repro dims",
                    *(f"dvc repro baselines@{m}" for m in params["baselines"]["methods"])):
        assert command in text, command
    claims = {c.id: c.verdict for c in judge(params, tmp_path)}
    assert claims == {"clean_gain": SUPPORTED, "gain_size": INCONCLUSIVE, "noise_visible": NOT_RUN, "noise": NOT_RUN,
                      "query_space": NOT_RUN, "query_learned": NOT_RUN, "true_class": NOT_RUN, "lesions": NOT_RUN,
                      "dimension": NOT_RUN, "controls": NOT_RUN}  # +2 pts against the paper's +1.85 pts here
    heads = {t["head"] for t in ClaimRows(html).table()}
    assert "The gain grows at moderate input noise toy: not run" in heads
    assert next(c.title for c in judge(params, tmp_path)
                if c.id == "dimension") + " not run dvc repro dims" in heads


def test_fixture_params_follow_the_params_contract():
    from pipeline.config import validate

    for dataset in ("fashion-mnist", "cifar10"):
        params = fake_params(dataset)
        validate(params)
        add_resnet_run(params)
        validate(params)


def test_left_out_sections_name_the_full_profile_command(built, tmp_path):
    _, params, index = built
    html, _ = _html_of(index)
    assert "Left out of this profile" in html and "a ResNet18 row (Table 1, all claims)" in html
    assert f"<code>{FULL_PROFILE_COMMAND.replace('&', '&amp;')}</code>" in html
    with_resnet = fake_params()
    add_resnet_run(with_resnet)
    assert not any("ResNet18" in item["what"] for item in left_out(validate(with_resnet)))
    assert left_out(validate({**with_resnet, "profile": "full"})) == []
    assert not any("related-work" in item["what"] for item in left_out(validate(with_resnet)))  # it lists baselines
    no_baselines = {**with_resnet, "baselines": {**with_resnet["baselines"], "methods": []}}
    row = next(item for item in left_out(validate(no_baselines)) if "related-work" in item["what"])
    assert row["command"].startswith("gattanet-cli profile related-addon && dvc repro")
    assert "related-scratch" in row["command"] and "reports/<profile>/index.html" in row["command"]


def test_no_lesion_runs_in_params_says_how_to_add_one(tmp_path):
    params = fake_params()
    params["lesions"] = {}
    write_fake_outputs(tmp_path, params, skip=OPTIONAL)
    claim = {c.id: c for c in judge(params, tmp_path)}["lesions"]
    assert claim.verdict == NOT_RUN and "lesions:" in claim.how_to_run


def test_missing_required_metrics_names_the_file(tmp_path):
    params = fake_params()
    write_fake_outputs(tmp_path, params)
    (tmp_path / "results/train-attn/toy-fmnist-d64/metrics.json").unlink()
    with pytest.raises(ReportInputError, match=r"train-attn/toy-fmnist-d64/metrics\.json.*train-attn@toy-fmnist-d64"):
        render_report(params, tmp_path, tmp_path / "reports", PROVENANCE)


def test_malformed_output_names_file_and_key(tmp_path):
    params = fake_params()
    write_fake_outputs(tmp_path, params, skip=OPTIONAL[1:])
    path = tmp_path / "results/train-attn/toy-fmnist-d16/metrics.json"
    metrics = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in metrics.items() if k != "gain"}))  # an output of the old schema
    with pytest.raises(ReportInputError, match=r"train-attn/toy-fmnist-d16/metrics\.json: missing key\(s\) gain"):
        loaded(params, tmp_path)
    path.write_text("{not json")
    with pytest.raises(ReportInputError, match=r"toy-fmnist-d16/metrics\.json: not valid JSON"):
        render_report(params, tmp_path, tmp_path / "reports", PROVENANCE)
    path.write_text(json.dumps(metrics))
    sweep_path = tmp_path / "results/noise/toy-fmnist-d64/sweep.json"
    sweep = json.loads(sweep_path.read_text())
    sweep_path.write_text(json.dumps({**sweep, "gain": sweep["gain"][:-1]}))  # one σ without its gain
    with pytest.raises(ReportInputError, match=r"noise/toy-fmnist-d64/sweep\.json: gain must be a list of 6"):
        loaded(params, tmp_path)
    sweep_path.write_text(json.dumps({k: v for k, v in sweep.items() if k != "growth"}))
    with pytest.raises(ReportInputError, match=r"sweep\.json: missing key\(s\) growth"):
        loaded(params, tmp_path)


def test_a_failed_build_leaves_the_previous_index_whole(tmp_path, monkeypatch):
    params = fake_params()
    write_fake_outputs(tmp_path, params, skip=("embedding", "maps", "lesions"))
    out = tmp_path / "reports"
    out.mkdir()
    (out / "index.html").write_text("previous report")

    def broken(*args, **kwargs):
        raise RuntimeError("figure failed")
    monkeypatch.setattr(figures, "noise_curve", broken)
    with pytest.raises(RuntimeError, match="figure failed"):
        render_report(params, tmp_path, out, PROVENANCE)
    assert (out / "index.html").read_text() == "previous report"


def test_provenance_and_deviations_come_from_outputs_and_params(tmp_path):
    params = fake_params()
    write_fake_outputs(tmp_path, params)
    prov = collect_provenance(tmp_path, validate(params), loaded(params, tmp_path))
    assert prov["devices"] == ["cpu"] and "torch" in prov["versions"]
    assert prov["commit"].startswith("unknown") or len(prov["commit"]) == 40
    stages = {s["stage"]: s["seconds"] for s in prov["stages"]}
    assert stages["train-attn@toy-fmnist-d16"] == 30.0 and stages["pretrain@toy-fmnist"] == 12.5
    assert stages["baselines@se"] == 20.0
    assert "attn_dim: 64" in prov["params_yaml"]

    topics = {d["topic"]: d for d in deviations(load_paper(), validate(params))}
    assert topics["Noise clipping"]["params"] == "noise.clip = true"
    assert topics["Noise draws and σ*"]["params"] == "noise.peak_sigma = 0.04"
    assert topics["Training seeds and confidence intervals"]["params"] == (
        "attention.toy-fmnist-d16.seeds = [0, 1, 2], attention.toy-fmnist-d64.seeds = [0, 1, 2]")
    assert "Dataset" in topics and "ResNet18 backbone" not in topics  # no ResNet in these params
    params = json.loads(json.dumps(params).replace('"fashion-mnist"', '"cifar10"'))  # the paper's own dataset
    params["profile"] = "paper"
    topics = {d["topic"] for d in deviations(load_paper(), validate(params))}
    assert "Dataset" not in topics and "Epoch budgets" not in topics and "Initial attention strength α₀" in topics


def test_agreement_maps_figure_is_generic_over_taps(tmp_path):
    """A ResNet-like 6-tap layout (4 conv, 2 dense) and RGB images draw as a 6 + 1 column grid."""
    rng = np.random.default_rng(0)
    taps = [{"name": f"layer{i}", "kind": "conv", "shape": [8, 8 >> (i // 2), 8 >> (i // 2)]} for i in range(4)]
    taps += [{"name": "avgpool", "kind": "dense", "shape": [512]}, {"name": "logits", "kind": "dense", "shape": [5]}]
    sample = {"index": 0, "label": 2, "pred_baseline": 1, "pred_gattanet": 2,
              "image": rng.integers(0, 256, size=(3, 16, 16)).tolist(),
              "scores": [rng.normal(size=t["shape"][1:] if t["kind"] == "conv" else t["shape"]).tolist() for t in taps]}
    alpha = [0.1, 0.2, -0.3, 0.4, 0.5, -0.5]
    fig = figures.agreement_maps_figure({"taps": taps, "classes": list("abcde"), "samples": [sample, sample],
                                  "alpha": alpha})
    assert len(fig.axes) == 2 * 7
    assert fig.axes[-1].patches[2].get_facecolor()[:3] == pytest.approx((0.839, 0.153, 0.157), abs=1e-2)  # true class red
    # bars are the modulation α·a: with α < 0 a unit's bar points opposite to its raw score
    heights = [p.get_height() for p in fig.axes[-1].patches[:5]]
    assert heights == pytest.approx([-0.5 * v for v in sample["scores"][-1]])
    links = figures.save(fig, tmp_path, "maps6")
    assert (tmp_path / links["png"]).exists() and (tmp_path / links["svg"]).exists()


def _baseline_files(root: Path, params: dict) -> dict[str, dict]:
    return {m: json.loads((root / "results/baselines" / f"{m}.json").read_text())
            for m in params["baselines"]["methods"] if (root / "results/baselines" / f"{m}.json").exists()}


def test_baselines_section_compares_every_method_gattanet_first(built):
    root, params, index = built
    html, page = _html_of(index)
    assert "baselines" in page.ids and 'href="#baselines"' in html
    assert html.index('id="lesions"') < html.index('id="baselines"')
    files = _baseline_files(root, params)
    macs = baselines_macs(validate(params))  # counted on the models as the stage builds them
    assert macs["gattanet"] > macs["backbone"] and macs["se"] > macs["backbone"]
    modules = sorted((m for m in files if m not in ("gattanet", "wider-toy")), key=lambda m: -files[m]["clean_acc"])
    order = ["gattanet", *modules, "wider-toy"]
    every = Rows(html, "baselines").rows
    headers = [r[0] for r in every if r[0].startswith(("Add-on track:", "From-scratch track:"))]
    assert [h.split(":")[0] for h in headers] == ["Add-on track", "From-scratch track"]  # wider-toy: from scratch
    assert every.index([headers[1]]) == len(order)  # the from-scratch block starts after the add-ons
    rows = [r for r in every if r[0] not in headers]
    assert [r[0] for r in rows] == [BASELINE_METHODS[m][0] for m in order] + ["frozen backbone"]
    for m, row in zip(order, rows):
        r = files[m]
        assert row[2] == count(r["trainable_params"]) and count(r["gattanet_params"]) in row[3]
        clean, peak = estimate(r["clean_gain"]), estimate(r["gain_at_peak"])
        correct = np.load(root / f"results/baselines/{m}.npz")["correct"][:, 0]
        acc_ci = accuracy_ci(correct)  # the accuracy over seeds and images, from the per-image archive
        assert row[4] == f"{pct(r['clean_acc'])} [{100 * acc_ci.low:.2f}, {100 * acc_ci.high:.2f}]", m
        assert acc_ci.low < correct.mean() < acc_ci.high
        assert row[5:8] == [ci_text(clean), pct(r["acc_at_peak"]), ci_text(peak)], m
        # the Δ with its CI is the method's accuracy minus the backbone's, on the same images
        assert row[5].startswith(pts(r["clean_acc"] - r["baseline_acc"]) + " [")
        assert row[7].startswith(pts(r["acc_at_peak"] - r["baseline_at_peak"]) + " [")
        if m in ("gattanet", "wider-toy"):  # the add-on reference; the from-scratch one (gattanet-scratch) did not run
            assert row[8:10] == (["the reference"] * 2 if m == "gattanet" else ["—", "—"]), m
        else:  # paired with GAttANet on the same images, from both per-image archives
            a, g = (np.load(root / f"results/baselines/{x}.npz")["correct"][:, 0] for x in (m, "gattanet"))
            assert row[8].startswith(pts(a.mean() - g.mean()) + " [") and row[8].split()[6] in VERDICT_WORDS, m
        assert row[10] == f"{macs[m] / 1e6:.2f} M ({macs[m] / macs['backbone']:.2f}×)", m
        assert row[11] == f"{r['infer_img_per_s']:,.0f} {1 / r['rel_infer']:.2f}×"
        assert row[12] == f"{1 / r['rel_train']:.2f}×"
        assert row[13] == ", ".join(map(str, r["epochs_run"])) + " (per seed)"
    budget = {m: row[3] for m, row in zip(order, rows)}
    tol = f"±{100 * BUDGET_TOL:.0f} %"  # the adapters' tolerance, the one the stage applies
    assert "unmatchable" in budget["eca"] and f"within {tol}" in budget["se"] and f"outside {tol}" in budget["cbam"]
    assert "backbone + GAttANet" in budget["wider-toy"]
    assert rows[-1][3] == pct(files["gattanet"]["baseline_acc"])  # frozen backbone; params cells are merged
    cfg = params["baselines"]
    text = " ".join(" ".join(page.text).split())
    assert f"at most {cfg['epochs']} epochs on a seeded subset of {cfg['train_subset']:,} training images" in text
    assert f"{cfg['test_subset']:,} test images" in text and f"acc at σ = {files['se']['peak_sigma']:g}" in text
    assert "figures/baselines.png" in page.imgs
    with Image.open(index.parent / "figures/baselines.png") as im:
        im.load()
        assert min(im.size) > 50
    assert (index.parent / "figures/baselines.svg").read_text().lstrip().startswith("<?xml")


def test_baselines_leaders_are_computed_from_the_files(tmp_path):
    params = fake_params()
    write_fake_outputs(tmp_path, params, skip=OPTIONAL[:-1])
    leaders = baselines_section(loaded(params, tmp_path), validate(params))["leaders"]
    n = len(params["baselines"]["methods"])
    assert leaders[0].startswith(f"Highest accuracy on clean images of the {n} methods run: GAttANet")
    path = tmp_path / "results/baselines/se.json"
    se = json.loads(path.read_text())
    se["clean_acc"] = _baseline_files(tmp_path, params)["gattanet"]["clean_acc"] + 0.01
    path.write_text(json.dumps(se))
    leaders = baselines_section(loaded(params, tmp_path), validate(params))["leaders"]
    assert leaders[0].startswith(f"Highest accuracy on clean images of the {n} methods run: SE ({pct(se['clean_acc'])})")
    assert "1.00 pts ahead of the next, GAttANet; GAttANet ranks 2" in leaders[0]
    path.write_text(json.dumps({**se, "peak_sigma": 0.1}))  # as if measured under other params: not comparable
    section = baselines_section(loaded(params, tmp_path), validate(params))
    assert section["peak_header"] == "the peak σ (per row)" and "not ranked" in section["leaders"][0]
    assert [r["peak"].endswith("(σ = 0.1)") for r in section["rows"]].count(True) == 1


def test_a_missing_baselines_method_shows_not_run_with_its_command(tmp_path):
    params = fake_params()
    write_fake_outputs(tmp_path, params, skip=OPTIONAL[:-1])
    (tmp_path / "results/baselines/cbam.json").unlink()
    index = render_report(params, tmp_path, tmp_path / "reports", PROVENANCE)
    html, page = _html_of(index)
    rows = {r[0]: r for r in Rows(html, "baselines").rows if not r[0].startswith(("Add-on track", "From-scratch track"))}
    assert rows["CBAM"][2] == "not run dvc repro baselines@cbam"
    assert all("not run" not in " ".join(r) for label, r in rows.items() if label != "CBAM")
    assert len(rows) == len(params["baselines"]["methods"]) + 1  # and the frozen backbone
    assert page.imgs == ["figures/forest.png", "figures/baselines.png"]
    params["baselines"]["methods"] = []
    missing = baselines_section(loaded(params, tmp_path), validate(params))["missing"]
    assert FULL_PROFILE_COMMAND in missing and "baselines.methods" in missing
    related = [p.stem for p in (ROOT / "pipeline" / "profiles").glob("related-*.yaml")]
    assert len(related) >= 2 and all(name in missing for name in related), (related, missing)
    assert missing.startswith("gattanet-cli profile related-addon && dvc repro")


def test_a_profile_with_some_related_methods_points_to_the_profiles_that_run_the_rest(built):
    _, params, index = built
    html, _ = _html_of(index)
    section = html[html.index('<section id="baselines">'):]
    section = section[:section.index("</section>")]
    assert f"Not in this profile's (<code>{params['profile']}</code>)" in section
    assert "BAM" in section and "Selective Kernel" in section  # one left out of each track
    for name in (p.stem for p in (ROOT / "pipeline" / "profiles").glob("related-*.yaml")):
        assert f"<code>{name}</code>" in section, name


def test_malformed_baselines_file_names_file_and_problem(tmp_path):
    params = fake_params()
    write_fake_outputs(tmp_path, params, skip=OPTIONAL[:-1])
    path = tmp_path / "results/baselines/se.json"
    se = json.loads(path.read_text())
    path.write_text(json.dumps({**se, "acc": se["acc"][:-1]}))
    with pytest.raises(ReportInputError, match=r"baselines/se\.json: acc must be a list of one value per sigma"):
        loaded(params, tmp_path)
    path.write_text(json.dumps({**se, "method": "eca"}))
    with pytest.raises(ReportInputError, match=r"se\.json: holds method 'eca', expected 'se'"):
        loaded(params, tmp_path)


def test_baselines_figure_draws_each_method_and_the_backbone_on_a_log_sigma_axis(tmp_path):
    params = fake_params()
    write_fake_outputs(tmp_path, params, skip=OPTIONAL[:-1])
    files = _baseline_files(tmp_path, params)
    results = [(BASELINE_METHODS[m][0], r) for m, r in files.items()]
    fig = figures.baselines_curves(results, "test", peak_sigma=files["se"]["peak_sigma"])
    top, bottom = fig.axes
    assert [t.get_text() for t in top.get_legend().get_texts()] == ["frozen backbone", *(label for label, _ in results)]
    assert bottom.get_xscale() == "log"
    lines = {line.get_label(): line for line in top.get_lines()}
    assert np.allclose(lines["GAttANet"].get_ydata(), 100 * np.asarray(files["gattanet"]["acc"]))
    assert np.allclose(lines["frozen backbone"].get_ydata(), 100 * np.asarray(files["gattanet"]["baseline"]))
    with pytest.raises(ValueError, match="no results"):
        figures.baselines_curves([], "empty")


CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const box = el => { const r = el.getBoundingClientRect(); return [r.width, r.height]; };
  const imgs = [...document.images].map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0,
                                               box: box(i)}));
  const t1 = document.querySelector('#table1 table');
  const de = document.documentElement, scrolls = el => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
  const overflow = [...document.querySelectorAll('body *')].filter(el => {  // past the page's right edge, unboxed
    if (el.getBoundingClientRect().right <= de.clientWidth + 1) return false;
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) if (scrolls(p)) return false;
    return true;
  }).map(el => `${el.tagName}.${el.className}`);
  document.body.setAttribute('data-check', JSON.stringify({imgs, table1: t1 ? box(t1) : null, overflow,
                                                           page: [de.scrollWidth, de.clientWidth]}));
});
</script>"""
PHONE_FRAME = """<!DOCTYPE html><html><body style="margin:0"><iframe id="f" src="_chromium_check.html"
style="width:375px;height:1200px;border:0"></iframe><script>
document.getElementById('f').addEventListener('load', () => setTimeout(() => document.body.setAttribute('data-check',
  document.getElementById('f').contentDocument.body.getAttribute('data-check')), 300));
</script></body></html>"""


def _chromium() -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        pytest.skip("no chromium binary found (looked for chromium, chromium-browser, /usr/bin/chromium)")
    return chromium


def _dump(chromium: str, page: Path, tmp_path: Path, *flags: str) -> dict:
    """Load `page` in headless Chromium; what the check script measured."""
    res = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", *flags, "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    body = Page(res.stdout).attrs
    assert "data-check" in body, f"the check script did not run; DOM starts {res.stdout[:300]!r}"
    return json.loads(body["data-check"])


def test_report_scrolls_only_inside_wide_tables_on_a_phone(built, tmp_path):
    """At a phone's width (375 px, an iframe: headless Chromium's window has a larger minimum) the page never
    scrolls sideways: whatever is wider than the screen (wide tables) scrolls in its own box."""
    chromium = _chromium()
    _, _, index = built
    check, frame = index.with_name("_chromium_check.html"), index.with_name("_phone.html")
    check.write_text(index.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    frame.write_text(PHONE_FRAME)
    try:
        result = _dump(chromium, frame, tmp_path, "--allow-file-access-from-files", "--window-size=400,1300",
                       "--virtual-time-budget=5000")
    finally:
        check.unlink()
        frame.unlink()
    assert result["page"][1] <= 375 and result["page"][0] == result["page"][1], result["page"]
    assert not result["overflow"], result["overflow"]


def test_report_renders_in_headless_chromium(built, tmp_path):
    """One Chromium run on a test-only copy of the page (same folder, so the figure links resolve)
    with a check script appended: --dump-dom returns what the script measured (every <img> loaded
    with a non-zero size, Table 1 laid out); --screenshot must not be blank. The report itself
    carries no script."""
    chromium = _chromium()
    _, _, index = built
    check = index.with_name("_chromium_check.html")
    check.write_text(index.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    shot = tmp_path / "shot.png"
    try:
        res = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1400,4000",
             "--dump-dom", check.as_uri()], capture_output=True, text=True, timeout=120)
    finally:
        check.unlink()
    assert res.returncode == 0, res.stderr[-2000:]
    body = Page(res.stdout).attrs
    assert "data-check" in body, f"the check script did not run; DOM starts {res.stdout[:300]!r}"
    result = json.loads(body["data-check"])
    assert result["table1"] and min(result["table1"]) > 50, result["table1"]
    assert {i["src"] for i in result["imgs"]} == {f"figures/{f}.png" for f in (*FIGURE_IDS, "baselines", "forest")}
    assert result["page"][0] == result["page"][1] and not result["overflow"], result  # no sideways page scroll
    broken = [i for i in result["imgs"] if not i["ok"] or min(i["box"]) < 50]
    assert not broken, broken
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("L"), dtype=float)
    assert pixels.shape == (4000, 1400)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.01  # text, tables and figures, not a blank page


def test_a_loss_is_below_a_range_with_only_an_upper_end():
    """'up to +3.5 points' still claims a gain: a CI wholly below 0 is below the paper's range."""
    from gattanet.analysis.stats import effect_ci
    from pipeline.report.tables import compare_gain

    loss = effect_ci([(1.0, np.full((3, 100), -0.02) + np.linspace(-0.01, 0.01, 100))])
    assert compare_gain(loss, None, 0.035) == "below the paper's range"
    gain = effect_ci([(1.0, np.full((3, 100), 0.02) + np.linspace(-0.01, 0.01, 100))])
    assert compare_gain(gain, None, 0.035) == "consistent with the paper's range"
