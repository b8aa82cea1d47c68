"""The stage registry (pipeline/stages/registry.py) is what the CLI, the plan, the folder clean-up and the report
derive their stages from: its KEYs read the same from validated and raw params, its outputs are those of
pipeline/outputs.py, every timed stage counts in the report's compute total, and its folders are the ones emptied.
dvc.yaml is held to it by tests/test_stage_deps.py."""

import pytest
import yaml

from pipeline import outputs
from pipeline.config import load_params
from pipeline.report.load import Outputs
from pipeline.report.tables import stage_times
from pipeline.stages import STAGES, clear_folder_outputs, stage_entries
from tests.helpers import ROOT


def test_entries_read_the_same_from_validated_and_raw_params(tmp_path, tiny_params):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    for path in (ROOT / "params.yaml", tmp_path / "params.yaml"):
        params = load_params(path)
        for name, stage in STAGES.items():
            assert stage_entries(params, name) == stage_entries(params.raw, name), name
            assert (stage_entries(params, name) is None) == (not stage.keyed)
    assert stage_entries(params, "baselines") == list(tiny_params["baselines"]["methods"])


def test_entries_of_absent_or_empty_sections_are_none_to_run():
    assert stage_entries({}, "extend") == stage_entries({"controls": None}, "controls") == []
    assert stage_entries({"baselines": {}}, "baselines") == []
    assert stage_entries({"extensions": {"t2": {}, "h4": {}}}, "extend") == ["t2", "h4"]
    assert stage_entries({}, "dims") is None


def test_every_output_schema_belongs_to_its_stage_s_declared_outputs():
    """Each pipeline/outputs.py entry is written by a registry stage, keyed as it is, and is one of that stage's
    dvc.yaml outputs (or the DVCLive folder whose files are)."""
    for o in outputs.OUTPUTS:
        name, _, key = o.stage.partition("@")
        stage = STAGES[name]
        assert stage.keyed == bool(key) == ("{key}" in o.pattern), o.pattern
        declared = stage.outs + stage.metrics + stage.plots
        assert o.pattern in declared or any(d.startswith(o.pattern + "/") for d in declared), o.pattern


def test_a_timed_stage_s_output_records_its_seconds():
    timed = [s for s in STAGES.values() if s.timed]
    assert {s.name for s in timed} >= {"pretrain", "train-attn", "extend"}
    for stage in timed:
        assert stage.timed.stage.split("@")[0] == stage.name
        assert "seconds" in stage.timed.required and "device" in stage.timed.names, stage.name


def test_the_compute_total_counts_every_timed_stage_extensions_included(tmp_path):
    """stage_times once left out extend@KEY, so an extensions run's compute total under-counted it."""
    rec = lambda seconds: {"seconds": seconds, "device": "cpu", "precision": "fp32"}  # noqa: E731
    out = Outputs(root=tmp_path, train_attn={"r": rec(1.0)}, pretrain={"b": rec(2.0)}, noise={"r": rec(3.0)},
                  lesions={"r": rec(4.0)}, embedding={"r": {"stats": rec(5.0), "points": {}}},
                  maps={"r": {"maps": {}, "stats": rec(6.0)}}, baselines={"se": rec(7.0)}, controls={"r": rec(8.0)},
                  extensions={"t2": rec(9.0)})
    rows = stage_times(out)
    assert [r["stage"].split("@")[0] for r in rows] == [s.name for s in STAGES.values() if s.timed]
    assert "extend@t2" in {r["stage"] for r in rows}
    assert sum(r["seconds"] for r in rows) == 45.0


def test_the_stages_empty_exactly_their_registered_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = ["models/attention/r/seed-7.pt", "models/extensions/t2/seed-7.pt", "reports/figures/old.png",
             "models/attention/other/seed-7.pt", "results/noise/r/sweep.json"]
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("old")
    clear_folder_outputs("train-attn", "r")
    clear_folder_outputs("extend", "t2")
    clear_folder_outputs("report", None)
    clear_folder_outputs("noise", "r")  # file outputs: each replaced atomically by its stage, none removed here
    assert [f for f in files if (tmp_path / f).exists()] == files[3:]
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "seed-1.pt").parent.mkdir()
    (elsewhere / "seed-1.pt").write_text("someone else's")
    (tmp_path / "models/attention/r").symlink_to(elsewhere)
    clear_folder_outputs("train-attn", "r")
    assert not (tmp_path / "models/attention/r").exists() and (elsewhere / "seed-1.pt").exists()


@pytest.mark.parametrize("name", list(STAGES))
def test_help_names_the_stage_s_outputs(name):
    stage = STAGES[name]
    for path in stage.outs + stage.metrics + stage.plots:
        assert path.replace("{key}", "KEY") in stage.help
    assert ("KEY in params" in stage.help) == stage.keyed
