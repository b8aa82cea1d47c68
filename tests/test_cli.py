"""gattanet-cli through Typer's CliRunner: help everywhere, describe, profiles, bad input."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import STAGES, app
from tests.helpers import ROOT

runner = CliRunner()


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_answers_help(stage):
    r = runner.invoke(app, ["stage", stage, "--help"])
    assert r.exit_code == 0, r.output
    assert "--params" in r.output and "--set" in r.output


@pytest.mark.parametrize("command", [[], ["stage"], ["describe"], ["bench"], ["profile"], ["report"]])
def test_commands_answer_help(command):
    r = runner.invoke(app, command + ["--help"])
    assert r.exit_code == 0 and "Usage" in r.output


def test_describe_json_has_the_papers_counts():
    r = runner.invoke(app, ["describe", "--backbone", "toy", "--dataset", "cifar10", "--attn-dim", "16", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["backbone_params"] == 620_362 and d["attention_params"] == 15_781
    assert [t["kind"] for t in d["taps"]] == ["conv"] * 3 + ["dense"] * 2


def test_describe_table_and_cifar100():
    r = runner.invoke(app, ["describe", "--dataset", "cifar100"])
    assert r.exit_code == 0 and "643,492" in r.output and "conv1" in r.output


@pytest.mark.parametrize("args, expect", [
    (["--backbone", "vgg16"], "allowed"),
    (["--dataset", "mnist"], "allowed"),
    (["--attn-dim", "0"], "d"),
])
def test_describe_refuses_unknown_values(args, expect):
    r = runner.invoke(app, ["describe", *args])
    assert r.exit_code == 2 and expect in r.output


def test_bad_param_exits_2_naming_the_key(tmp_path, tiny_params, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_params["attention"]["toy-fmnist-d16"]["attn_dim"] = -3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    r = runner.invoke(app, ["stage", "train-attn", "toy-fmnist-d16"])
    assert r.exit_code == 2
    assert "attention.toy-fmnist-d16.attn_dim" in r.output and "≥ 1" in r.output
    assert list(tmp_path.iterdir()) == [tmp_path / "params.yaml"]  # nothing written


def test_override_and_unknown_entry(tmp_path, tiny_params, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    r = runner.invoke(app, ["stage", "noise", "toy-fmnist-d16", "-S", "noise.sigmas=[0, -1]"])
    assert r.exit_code == 2 and "noise.sigmas[1]" in r.output
    r = runner.invoke(app, ["stage", "noise", "no-such-run"])
    assert r.exit_code == 2 and "no entry 'no-such-run'" in r.output and "toy-fmnist-d16" in r.output


def test_missing_inputs_give_one_line(tmp_path, tiny_params, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    r = runner.invoke(app, ["stage", "pretrain", "toy-fmnist"])
    assert r.exit_code == 1 and "data/fashion-mnist.pt is missing" in r.output
    assert "Traceback" not in r.output


def test_profile_switch_prints_changes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((ROOT / "pipeline" / "profiles" / "default.yaml").read_text())
    r = runner.invoke(app, ["profile", "paper"])
    assert r.exit_code == 0, r.output
    from pipeline.profiles import compose, render_profile

    assert (tmp_path / "params.yaml").read_text() == render_profile("paper", compose("paper"))
    assert "+ attention.toy-cifar10-d16" in r.output and "- attention.toy-fmnist-d16" in r.output
    assert "~ noise.sigmas" in r.output
    r = runner.invoke(app, ["profile", "full"])
    assert r.exit_code == 0 and "+ attention.toy-fmnist-d4" in r.output and "+ backbones.resnet18-fmnist" in r.output
    assert "+ lesions.toy-fmnist-d16" in r.output
    r = runner.invoke(app, ["profile", "huge"])
    from pipeline.profiles import available

    assert r.exit_code == 2 and f"allowed: {', '.join(available())}" in r.output


def test_profile_help_names_every_profile_there_is():
    from pipeline.profiles import available

    out = runner.invoke(app, ["profile", "--help"], terminal_width=200).output
    assert all(name in out for name in available()) and "full" in available()


def test_a_bug_keeps_its_traceback(tmp_path, tiny_params, monkeypatch):
    """Only user errors become one line: a ValueError from inside the code is a bug, not bad params."""
    import pipeline.stages.dims as dims

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))

    def broken(params):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(dims, "run", broken)
    r = runner.invoke(app, ["stage", "dims"])
    assert r.exit_code != 2 and isinstance(r.exception, ValueError)
    assert "error:" not in r.output


@pytest.mark.parametrize("how", [["--debug"], "env"])
def test_debug_shows_the_trace_of_user_errors_too(tmp_path, tiny_params, monkeypatch, how):
    from pipeline.config import ParamsError

    monkeypatch.chdir(tmp_path)
    tiny_params["seed"] = -1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    assert runner.invoke(app, ["stage", "dims"]).exit_code == 2
    args, env = (how, {}) if how != "env" else ([], {"GATTANET_DEBUG": "1"})
    r = runner.invoke(app, [*args, "stage", "dims"], env=env)
    assert isinstance(r.exception, ParamsError) and "seed: must be ≥ 0" in str(r.exception)


def test_the_validate_stage_checks_what_params_name_on_this_machine(tmp_path, tiny_params, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_params["data"]["fashion-mnist"]["root"] = str(tmp_path / "nowhere")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    r = runner.invoke(app, ["stage", "validate"])
    assert r.exit_code == 2 and "data.fashion-mnist.root" in r.output and not (tmp_path / "results").exists()
    tiny_params["data"]["fashion-mnist"]["root"] = str(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    assert runner.invoke(app, ["stage", "validate"]).exit_code == 0
    stamp = (tmp_path / "results/params.ok").read_bytes()
    tiny_params["attention"]["toy-fmnist-d16"]["epochs"] = 7  # a valid change: the stamp's bytes stay
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    assert runner.invoke(app, ["stage", "validate"]).exit_code == 0
    assert (tmp_path / "results/params.ok").read_bytes() == stamp
