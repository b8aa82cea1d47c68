"""Every output file named once (pipeline/outputs.py): the docs' table is generated from it, a stage's record
with an undeclared or a missing key is refused, and the training curves go through DVCLive (whole after a
resume, nothing written outside their folder)."""

import pytest

from pipeline import outputs
from pipeline.curves import CURVES, Curves, read_curves, write_curves


def test_the_docs_outputs_table_is_the_outputs_module():
    """docs/ARCHITECTURE.md's "Pipeline outputs" table is `outputs.table()` (regenerate it with
    `python -m pipeline.outputs --write`)."""
    assert outputs.docs_table(outputs.DOCS.read_text()) == outputs.table()


def test_every_output_is_named_once_and_its_fields_once():
    patterns = [o.pattern for o in outputs.OUTPUTS]
    assert len(patterns) == len(set(patterns))
    for o in outputs.OUTPUTS:
        assert len(o.names) == len(set(o.names)), o.pattern
        assert set(o.required) <= set(o.names), o.pattern  # the report needs only what the stage writes


def test_a_record_with_an_undeclared_or_missing_key_is_refused():
    o = outputs.PRETRAIN_METRICS
    full = dict.fromkeys(o.names, 0)
    assert o.record(full) is full
    with pytest.raises(ValueError, match=r"results/pretrain/\{key\}/metrics.json: undeclared key\(s\) extra"):
        o.record(full | {"extra": 1})
    with pytest.raises(ValueError, match="declared key.s. missing: test_acc"):
        o.record({k: v for k, v in full.items() if k != "test_acc"})
    stats = dict.fromkeys(outputs.EMBED_STATS.names, 0)
    del stats["groups"]  # "or absent": a dataset without class groups
    outputs.EMBED_STATS.record(stats)


def test_paths_fill_in_the_key_and_root(tmp_path):
    assert outputs.TRAIN_ATTN_CURVES.path("d16").as_posix() == "results/train-attn/d16/live"
    assert outputs.DIMS.path(root=tmp_path) == tmp_path / "results/dims.json"


def _history(epochs):
    return [{"epoch": e, "train_loss": 1 / e, "train_acc": 0.1 * e, "val_loss": 2 / e, "val_acc": 0.2 * e,
             "seconds": 0.5} for e in epochs]


def test_curves_are_whole_after_a_resumed_training(tmp_path, monkeypatch):
    """A killed training logged epochs 1-2; the resumed one trains 3-4 (fit calls on_epoch for those only):
    the folder ends with all four, per seed, read back as fit's history; DVCLive writes no dvc.yaml, no
    report and nothing outside the folder."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "results/train-attn/run/live"
    killed = Curves(folder)
    for record in _history([1, 2]):
        killed.callback("seed-0/")(record)
    assert read_curves(folder) == {"seed-0/": _history([1, 2])}  # live: epoch by epoch

    resumed = Curves(folder)
    for record in _history([3, 4]):
        resumed.callback("seed-0/")(record)
    resumed.callback("seed-1/")(_history([1])[0])
    resumed.finish({"seed-0/": _history([1, 2, 3, 4]), "seed-1/": _history([1])})
    assert read_curves(folder) == {"seed-0/": _history([1, 2, 3, 4]), "seed-1/": _history([1])}
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["results/train-attn/run/live/metrics.json"] + [
        f"results/train-attn/run/live/plots/metrics/seed-{s}/{c}.tsv" for s in (0, 1) for c in sorted(CURVES)]


def test_a_training_with_no_epochs_leaves_the_declared_files(tmp_path):
    """Given weights (pretrain trains nothing): the folder still has the metrics file and plots folder that
    dvc.yaml declares."""
    write_curves(tmp_path / "live", {"": []})
    assert (tmp_path / "live/metrics.json").read_text().strip() == "{}"
    assert (tmp_path / "live/plots/metrics").is_dir() and read_curves(tmp_path / "live") == {}
