"""Where the agreement's gain lies on cluttered images (issue 37 item 3): the pixels' regions, the AUC, the
analysis against the equations, and the maps stage's record on a tiny cluttered run."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from gattanet.analysis.agreement import rank_auc, where_estimates, where_gain_lies
from gattanet.data.clutter import BACKGROUND, CLUTTER, ITEM, ClutterSettings, generate, regions
from gattanet.models.attention import GlobalAttention
from gattanet.models.gattanet import GAttANet
from gattanet.models.registry import build_backbone
from pipeline.cli import app
from tests.helpers import write_fashion_mnist
from tests.test_clutter import clutter_params, synthetic_items

pytestmark = pytest.mark.usefixtures("one_thread")
SETTINGS = ClutterSettings(canvas=32, item_size=20, fragments=4, fragment_size=8, seed=7)


def test_regions_are_the_items_ink_the_clutters_ink_and_the_background():
    items, labels = synthetic_items(40)
    made = generate(items, labels, SETTINGS, "test")
    got = regions(made.images, SETTINGS, "test")
    ink = made.images[:, 0] > 0
    assert np.array_equal(got == BACKGROUND, ~ink)
    for i in range(len(got)):
        r, c = made.item_at[i]
        box = np.zeros((32, 32), bool)
        box[r:r + 20, c:c + 20] = True
        assert np.array_equal(got[i] == ITEM, ink[i] & box)
        fragments = np.zeros((32, 32), bool)
        for fr, fc in made.fragment_at[i]:
            fragments[fr:fr + 8, fc:fc + 8] = True
        assert np.array_equal(got[i] == CLUTTER, ink[i] & ~box)
        assert not (got[i] == CLUTTER)[~fragments].any()  # ink outside the item's square is a fragment's
    assert (got == CLUTTER).any() and (got == ITEM).any()
    with pytest.raises(ValueError, match=r"\(N, 1, 32, 32\) canvases"):
        regions(made.images[:, :, :16], SETTINGS, "test")


def test_rank_auc_is_the_share_of_pairs_the_values_order_ties_half():
    g = np.random.default_rng(0)
    values = g.integers(0, 5, (30, 40)).astype(float)  # many ties
    labels = g.integers(0, 3, (30, 40))
    labels[3] = 0  # no positive element
    got = rank_auc(values, labels == 1, labels == 2)
    for v, lab, auc in zip(values, labels, got):
        a, b = v[lab == 1], v[lab == 2]
        if len(a) == 0 or len(b) == 0:
            assert np.isnan(auc)
            continue
        pairs = (a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])
        assert auc == pytest.approx(pairs.mean())
    assert np.isnan(got[3])


class Batches:
    def __init__(self, x: torch.Tensor, size: int):
        self.x, self.size = x, size

    def epoch(self, _e: int):
        for i in range(0, len(self.x), self.size):
            yield self.x[i:i + self.size], torch.zeros(len(self.x[i:i + self.size]), dtype=torch.long)


def test_the_gain_auc_follows_eq5s_gain_of_each_conv_tap_and_flips_with_alpha():
    torch.manual_seed(0)
    backbone = build_backbone("toy", 10, 1)
    model = GAttANet(backbone, GlobalAttention(backbone.taps(), 8)).eval()
    with torch.no_grad():
        model.attention.alpha.copy_(torch.tensor([0.5, -0.7, 0.3, 0.2, 0.1]))
    x = torch.randn(12, 1, 32, 32)
    labels = np.random.default_rng(1).integers(0, 3, (12, 32, 32)).astype(np.int8)
    table = where_gain_lies({"m": model}, Batches(x, 5), labels, ITEM, {"vs_clutter": CLUTTER})
    assert table["taps"] == ["conv1", "conv2", "conv3"]
    model.attention.fast = False  # the reference: Eqs. 1-4 as written
    with torch.no_grad():
        _, state = model(x, return_state=True)
    model.attention.fast = True
    for t, (alpha, score) in enumerate(zip(model.attention.alpha[:3], state.scores[:3])):
        gain = (alpha * score).detach().numpy()
        k = 32 // gain.shape[-1]
        pixels = np.kron(gain, np.ones((1, k, k)))  # each cell over the k×k pixels it covers
        want = rank_auc(pixels.reshape(12, -1), labels.reshape(12, -1) == ITEM, labels.reshape(12, -1) == CLUTTER)
        np.testing.assert_allclose(table["vs_clutter"][0, t], want, atol=1e-6)
    with torch.no_grad():
        model.attention.alpha.neg_()
    flipped = where_gain_lies({"m": model}, Batches(x, 5), labels, ITEM, {"vs_clutter": CLUTTER})
    np.testing.assert_allclose(flipped["vs_clutter"], 1 - table["vs_clutter"], atol=1e-6)
    with pytest.raises(ValueError, match="yielded 12 images, `regions` labels 13"):
        where_gain_lies({"m": model}, Batches(x, 5), np.zeros((13, 32, 32), np.int8), ITEM, {"c": CLUTTER})


def test_where_estimates_keep_the_images_with_both_regions():
    aucs = np.full((2, 3, 5), 0.75)
    aucs[:, :, 1] = np.nan  # an image without clutter
    est = where_estimates({"taps": ["a", "b", "c"], "item_vs_clutter": aucs})
    assert est["item_vs_clutter"]["n"] == 4
    assert [e["mean"] for e in est["item_vs_clutter"]["auc"]] == pytest.approx([0.75] * 3)


@pytest.mark.slow
def test_the_maps_stage_records_where_the_gain_lies_on_the_cluttered_set(tmp_path, monkeypatch, tiny_params):
    root = write_fashion_mnist(tmp_path / "fm", 160, 60)
    params = clutter_params(tiny_params, root, {"fragments": 4, "seed": 1})
    params["backbones"]["toy-fmnist"]["dataset"] = "fashion-clutter"
    params["attention"] = {"toy-fmnist-d16": dict(params["attention"]["toy-fmnist-d16"], dataset="fashion-clutter",
                                                  seeds=[0, 1])}
    for section in ("lesions", "extensions", "controls"):
        params[section] = {}
    params["baselines"] = dict(params["baselines"], methods=[], dataset="fashion-clutter")
    params["report"] = dict(params["report"], figures={})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args in (["validate"], ["data", "fashion-clutter"], ["pretrain", "toy-fmnist"],
                 ["train-attn", "toy-fmnist-d16"], ["maps", "toy-fmnist-d16"]):
        r = runner.invoke(app, ["stage", *args])
        assert r.exit_code == 0, (args, r.output, r.exception)
    stats = json.loads(Path("results/maps/toy-fmnist-d16/stats.json").read_text())
    where = stats["where"]
    assert where["taps"] == ["conv1", "conv2", "conv3"]
    from gattanet.data.datasets import load_tensors

    test = load_tensors("data/fashion-clutter.pt")["test"].images.numpy()
    labels = regions(test, ClutterSettings(fragments=4, seed=1), "test")
    both = lambda other: int(sum(((l == ITEM).any() and (l == other).any()) for l in labels))  # noqa: E731
    assert where["item_vs_clutter"]["n"] == both(CLUTTER) and where["item_vs_background"]["n"] == both(BACKGROUND)
    for comparison in ("item_vs_clutter", "item_vs_background"):
        for est in where[comparison]["auc"]:
            assert est["low"] <= est["mean"] <= est["high"] and 0 <= est["mean"] <= 1
    assert "item over clutter AUC" in r.output
    maps = json.loads(Path("results/maps/toy-fmnist-d16/maps.json").read_text())
    from matplotlib.patches import Rectangle

    from pipeline.report.figures import agreement_maps_figure

    for sample in maps["samples"]:  # Fig. 3's outline: the square the item's ink lies in
        row, col, side = sample["item_box"]
        item = np.argwhere(labels[sample["index"]] == ITEM)
        assert side == 20 and item.min(0).tolist() >= [row, col] and item.max(0).tolist() < [row + side, col + side]
    fig = agreement_maps_figure(maps)
    outlined = [ax for ax in fig.axes if any(isinstance(p, Rectangle) and p.get_edgecolor()[1] > 0.5 for p in ax.patches)]
    assert len(outlined) == 4 * len(maps["samples"][:10])  # the image and the three conv maps of each sample


def test_the_report_shows_where_the_gain_lies_under_figure_3(tmp_path):
    from html import unescape

    from gattanet.analysis.stats import effect_ci
    from tests.report_fixtures import fake_params, render_report, write_fake_outputs
    from tests.test_report import PROVENANCE

    params = fake_params()
    write_fake_outputs(tmp_path, params)
    run = params["report"]["figures"]["fig2"]
    stats_path = tmp_path / "results" / "maps" / run / "stats.json"
    html = render_report(params, tmp_path, tmp_path / "reports", PROVENANCE).read_text()
    assert "Where the gain lies" not in html  # Fashion-MNIST: no regions, no answer
    g = np.random.default_rng(0)
    aucs = np.clip(g.normal([[[0.71], [0.52], [0.40]]] * 3, 0.05, (3, 3, 500)), 0, 1)  # seeds, taps, images
    aucs[:, :, :20] = np.nan  # 20 images without clutter
    where = where_estimates({"taps": ["conv1", "conv2", "conv3"], "item_vs_clutter": aucs,
                             "item_vs_background": aucs[:, :, ::-1]})
    stats = json.loads(stats_path.read_text())
    stats_path.write_text(json.dumps(dict(stats, where=where)))
    html = unescape(render_report(params, tmp_path, tmp_path / "reports", PROVENANCE).read_text())
    figure3 = html[html.index('id="fig3"'):html.index('id="fig4a"')]
    assert "Where the gain lies on the cluttered images" in figure3 and "the 480 test images" in figure3
    for t, tap in enumerate(("conv1", "conv2", "conv3")):
        est = effect_ci([(1.0, aucs[:, t, 20:])])
        assert f"<td><code>{tap}</code></td><td>{est.mean:.3f} [{est.low:.3f}, {est.high:.3f}]</td>" in figure3


def test_a_new_experiments_report_says_so_first_and_compares_only_relative_error_reductions(tmp_path, monkeypatch):
    """Issue 37: a run on a task of the project's making (a deviation marked new_experiment, as the clutter profile's
    dataset) is introduced as a new experiment, not a reproduction, and its Table 1 sets its gains against the
    paper's only as relative error reductions; a reproduction's report keeps its lead and its gains in points."""
    from html import unescape

    import pipeline.report.build as build
    from pipeline.report.claims import estimate, paper_relative_gain
    from pipeline.report.load import load_paper
    from pipeline.report.tables import closest_paper_row, error_reduction
    from tests.report_fixtures import fake_params, loaded, render_report, write_fake_outputs
    from tests.test_report import PROVENANCE

    params = fake_params()
    write_fake_outputs(tmp_path, params)
    html = unescape(render_report(params, tmp_path, tmp_path / "reproduction", PROVENANCE).read_text())
    assert '<p class="lead">A reproduction of' in html and "A new experiment with the analyses" not in html
    assert "of the error: ours" not in html and "pts: ours" in html

    real = build.deviations
    monkeypatch.setattr(build, "deviations", lambda paper, p: [dict(d, new_experiment=d["topic"] == "Dataset")
                                                               for d in real(paper, p)])
    html = unescape(render_report(params, tmp_path, tmp_path / "experiment", PROVENANCE).read_text())
    assert '<p class="lead">A new experiment with the analyses' in html and "A reproduction of" not in html
    table1 = html[html.index('id="table1"'):html.index('id="figures"')]
    assert "pts: ours" not in table1
    out, paper = loaded(params, tmp_path), load_paper()
    for key, m in out.train_attn.items():  # each row's verdict from its relative CI against the paper's reduction
        r = paper_relative_gain(closest_paper_row(m["arch"], m["dataset"], m["attn_dim"], paper["table1"]))
        est = estimate(out.clean_gain[key])
        low, high = (error_reduction(m["baseline_acc"], g) for g in (est.low, est.high))
        where = "below" if high < r else "above" if low > r else "consistent with it"
        assert f"paper {100 * r:.1f} % of the error: ours {where}" in table1, key
