"""Each stage's `work(params, key)` (what `gattanet-cli plan` times) counts what its `run` does: every stage
of the tiny profile is run in-process with a counter on the images of every model pass (training or not),
and the counts are compared with the stage's Work items."""

import shutil
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from pipeline.config import load_params
from pipeline.plan import entries
from pipeline.stages import STAGES
from pipeline.profiles import compose
from tests.helpers import ROOT, write_fashion_mnist

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@contextmanager
def counted_forwards(counts: Callable[[], Counter]):
    """Counts the images of every outermost model pass into counts(): "train" with autograd on, else "eval".
    A pass is a module call, or a Backbone.run outside one (fast_eval's shared first pass; its second passes
    start from it through Backbone.resume, not counted); calls inside a counted one are part of it, and
    Backbone.taps's dry run is no pass."""
    from gattanet.models.backbone import Backbone

    depth = [0]

    def count(x):
        if depth[0] == 0 and torch.is_tensor(x) and x.device.type != "meta":
            counts()["train" if torch.is_grad_enabled() else "eval"] += len(x)

    def pre(module, args):
        count(args[0] if args else None)
        depth[0] += 1

    def post(module, args, out):
        depth[0] -= 1

    def nested(method, counted):
        def wrapper(self, *a, **kw):
            if counted and a:
                count(a[0])
            depth[0] += 1
            try:
                return method(self, *a, **kw)
            finally:
                depth[0] -= 1
        return wrapper

    handles = [torch.nn.modules.module.register_module_forward_pre_hook(pre),
               torch.nn.modules.module.register_module_forward_hook(post, always_call=True)]
    run, resume, taps = Backbone.run, Backbone.resume, Backbone.taps
    Backbone.run, Backbone.resume, Backbone.taps = nested(run, True), nested(resume, False), nested(taps, False)
    try:
        yield
    finally:
        Backbone.run, Backbone.resume, Backbone.taps = run, resume, taps
        for h in handles:
            h.remove()


@pytest.fixture(scope="module")
def counted_run(tmp_path_factory):
    """Every stage of the tiny profile (on 200 + 100 small images) run in-process in dvc.yaml's order, with
    {(stage, key): Counter(train=images, eval=images)} of what went through the models."""
    import pipeline.stages.embed as embed
    from pipeline.cli import app

    where = tmp_path_factory.mktemp("counted")
    params = compose("tiny")
    params["data"]["fashion-mnist"]["root"] = str(write_fashion_mnist(where / "fm", 200, 100))
    (where / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for name in ("analysis_plan.yaml",):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, where / name)
    counts: dict[tuple, Counter] = {}
    current = [None]
    rng = np.random.default_rng(0)
    with pytest.MonkeyPatch.context() as mp, counted_forwards(lambda: counts.setdefault(current[0], Counter())):
        mp.chdir(where)
        mp.setattr(embed, "umap_2d", lambda q, seed, n_neighbors: rng.normal(size=(len(q), 2)))  # no model pass
        p = load_params(where / "params.yaml")
        works, skipped = {}, []
        for name, registered in STAGES.items():
            if name == "report":  # renders the others' outputs: no model pass, and the slowest to run
                continue
            stage = registered.code()
            if not hasattr(stage, "work"):  # the plan says so ("not counted"); nothing to compare
                skipped.append(name)
                continue
            for key in entries(p, name):
                current[0] = (name, key)
                counts[current[0]] = Counter()
                r = CliRunner().invoke(app, ["stage", name, *([key] if key is not None else [])])
                assert r.exit_code == 0, (name, key, r.output, r.exception)
                works[current[0]] = stage.work(p, key)
    return {"where": where, "params": p, "counts": counts, "works": works, "skipped": skipped}


def test_every_stage_entry_counts_the_images_its_run_passes(counted_run):
    """Per stage entry: images in training steps and in evaluations as counted while it ran = its Work items'
    images (the tiny profile trains 1 epoch, so no early stop makes the count an upper bound). A Work item's
    images are the images its loader yields; the models that share or repeat a pass are its probe's (`n`)."""
    assert counted_run["works"], "no stage ran"
    for entry, works in counted_run["works"].items():
        want = Counter()
        for w in works:
            if w.probe is not None:  # a training step (sharded; its probe may time it as a cheaper pass)
                models = 1 + w.probe.n if w.probe.mode == "separate" else 1  # the baseline and n, each its own
                want["train" if w.sharded or w.probe.mode == "train" else "eval"] += w.images * models
        got = counted_run["counts"][entry]
        assert +got == +want, f"{entry}: ran {dict(got)}, work() says {dict(want)}"
    model_stages = {s for s, _ in counted_run["works"] if any(w.probe for w in counted_run["works"][s, _])}
    assert {"pretrain", "train-attn", "noise", "lesions", "embed", "maps", "baselines", "extend"} <= model_stages


def test_the_plan_is_the_stages_work(counted_run, monkeypatch):
    """`gattanet-cli plan` lists exactly the stages' work items, in dvc.yaml's order."""
    from pipeline.plan import build_works
    from pipeline.stages.report import work

    monkeypatch.chdir(counted_run["where"])
    works, _ = build_works(counted_run["params"])
    expected = [w for ws in counted_run["works"].values() for w in ws] + work(counted_run["params"])
    order = {name: i for i, name in enumerate(STAGES)}
    expected.sort(key=lambda w: order[w.stage])  # stable: entries keep their order
    assert [w for w in works if not w.what.startswith("not counted")] == expected


def test_every_output_of_the_run_has_its_declared_fields(counted_run):
    """Each stage output the run wrote, at its pipeline/outputs.py path, holds exactly its declared fields (JSON
    keys, CSV columns, npz arrays); the DVCLive folders hold every seed's curves, one row per epoch run."""
    import csv
    import json

    from pipeline import outputs
    from pipeline.curves import CURVES, read_curves

    root, p = counted_run["where"], counted_run["params"]
    seen = 0
    for o in outputs.OUTPUTS:
        stage = o.stage.split("@")[0]
        if stage == "report" or stage in counted_run["skipped"]:
            continue
        for key in entries(p, stage):
            path = o.path(key, root)
            assert path.exists(), path
            optional = {outputs.field_name(f) for f in o.fields if f.endswith(" or absent")}
            if o.kind == "json":
                assert set(o.names) - optional <= set(json.loads(path.read_text())) <= set(o.names), path
            elif o.kind == "csv":
                with path.open() as f:
                    assert next(csv.reader(f)) == list(o.names), path
            elif o.kind == "npz":
                with np.load(path) as z:
                    assert set(z.files) <= set(o.names), path
            seen += 1
    assert seen > 20
    for key, run in p.attention.items():
        metrics = json.loads(outputs.TRAIN_ATTN_METRICS.path(key, root).read_text())
        curves = read_curves(outputs.TRAIN_ATTN_CURVES.path(key, root))
        assert set(curves) == {f"seed-{s}/" for s in run.seeds}
        for row in metrics["per_seed"]:
            history = curves[f"seed-{row['seed']}/"]
            assert [h["epoch"] for h in history] == list(range(1, row["epochs_run"] + 1))
            assert all(set(h) == {"epoch", *CURVES} for h in history)
            assert max(h["val_acc"] for h in history) == pytest.approx(row["val_acc"])


def test_a_stage_does_not_depend_on_the_plan_s_counting():
    """A stage's work() runs only under `gattanet-cli plan`: its imports (the cost model) are not the stage's
    DVC deps, so changing how the plan times work reruns no stage."""
    from tests.stage_deps import stage_files

    for name, stage in STAGES.items():
        files = stage_files(stage.module)
        assert "pipeline/work.py" not in files and "gattanet/cost/rates.py" not in files, name
