"""dvc.yaml's code deps are exactly the project files each stage runs (walked from its imports), so
editing a module reruns the stages that run it and no others; dvc.yaml's stages, foreach sources, commands
and outputs are the stage registry's (pipeline/stages/registry.py); and every stage waits for `validate`."""

from pathlib import Path

import pytest
import yaml

from pipeline.stages import STAGES
from tests.helpers import ROOT
from tests.stage_deps import PACKAGES, dvc_skeleton, registry_skeleton, rewrite, stage_files

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def _stage(name: str) -> tuple[str, dict]:
    body = DVC[name].get("do", DVC[name])
    cli_name = body["cmd"].split()[2]
    assert body["cmd"].startswith("gattanet-cli stage ") and cli_name in STAGES, body["cmd"]
    return cli_name, body


@pytest.mark.parametrize("name", list(DVC))
def test_code_deps_are_exactly_the_files_the_stage_runs(name):
    cli_name, body = _stage(name)
    code = [d for d in body.get("deps", []) if d.split("/")[0] in PACKAGES]
    dirs = [d for d in code if (ROOT / d).is_dir() and any((ROOT / d).rglob("*.py"))]
    assert not dirs, f"{name}: list the modules, not folders of them: {dirs}"
    listed = {d for d in code if d.endswith(".py")}
    runs = stage_files(STAGES[cli_name].module)
    assert not runs - listed, (f"dvc.yaml stage {name} misses files it runs (`python -m tests.stage_deps` "
                               f"prints every stage's list): {sorted(runs - listed)}")
    assert not listed - runs, f"dvc.yaml stage {name} lists files it never runs: {sorted(listed - runs)}"
    assert len(listed) == len([d for d in code if d.endswith(".py")]), f"{name}: a dep is listed twice"


def test_the_writer_restores_a_missing_dep_and_keeps_everything_else():
    text = (ROOT / "dvc.yaml").read_text()
    files = {name: stage_files(stage.module) for name, stage in STAGES.items()}
    assert rewrite(text, files) == text
    broken = text.replace("        - gattanet/data/loader.py\n", "", 1).replace("        - gattanet/data/noise.py\n", "", 1)
    assert broken != text and rewrite(broken, files) == text


def test_dvc_yaml_has_exactly_the_registry_s_stages():
    assert set(DVC) == set(STAGES), (f"in dvc.yaml only: {sorted(set(DVC) - set(STAGES))}; in "
                                     f"pipeline/stages/registry.py only: {sorted(set(STAGES) - set(DVC))}")


@pytest.mark.parametrize("name", list(STAGES))
def test_dvc_yaml_runs_and_declares_each_stage_as_the_registry_says(name):
    """Its foreach source (the params section of its KEYs), `gattanet-cli stage NAME [KEY]`, and its outs, metrics
    and plots: the folders the stage empties, the plan's entries and the report's loading are the registry's."""
    if name not in DVC:
        pytest.skip(f"{name} is not in dvc.yaml (the test above fails)")
    assert dvc_skeleton(DVC[name]) == registry_skeleton(STAGES[name], PARAMS)


def test_the_skeleton_check_sees_a_stage_out_of_step():
    stage = STAGES["extend"]
    body = yaml.safe_load(yaml.safe_dump(DVC["extend"]))
    body["do"]["outs"] = body["do"]["outs"][1:]  # the checkpoints' folder left out
    assert dvc_skeleton(body) != registry_skeleton(stage, PARAMS)
    body = yaml.safe_load(yaml.safe_dump(DVC["baselines"]))
    body["do"]["cmd"] = body["do"]["cmd"].replace("${item}", "${key}")  # baselines runs over a list of methods
    assert dvc_skeleton(body) != registry_skeleton(STAGES["baselines"], PARAMS)
    body = yaml.safe_load(yaml.safe_dump(DVC["noise"]))
    body["foreach"] = "${lesions}"
    assert dvc_skeleton(body) != registry_skeleton(STAGES["noise"], PARAMS)


def test_non_code_deps_exist():
    for name in DVC:
        for d in _stage(name)[1].get("deps", []):
            if d.split("/")[0] in PACKAGES:
                assert (ROOT / d).exists(), f"{name}: {d} does not exist"


def test_every_stage_waits_for_the_params_check():
    """DVC runs `validate` first, so a bad param stops `dvc repro` before any output is removed."""
    stamp = "results/params.ok"
    validate = DVC["validate"]
    assert validate["params"] == [{"params.yaml": None}]  # the whole file, unknown keys included
    assert validate["outs"] == [{stamp: {"cache": False, "persist": True}}]
    for name in DVC:
        if name != "validate":
            assert stamp in _stage(name)[1]["deps"], f"{name} does not depend on {stamp}"


def test_the_walk_sees_lazy_imports_and_package_inits():
    files = stage_files("data")
    assert "pipeline/imagenet.py" in files  # imported inside run() for ImageNet only
    assert {"gattanet/__init__.py", "pipeline/__init__.py", "pipeline/stages/__init__.py"} <= files
    assert "pipeline/cli.py" in files and "gattanet/cost/bench.py" not in files  # bench is a tool command's lazy import
    assert Path("gattanet/engine/train.py").as_posix() in stage_files("pretrain")


def test_the_data_stage_depends_on_its_root_alone():
    """data/KEY.pt is made from the root's files; `val_fraction` is a param of the stages that carve the
    split, and the loader settings (workers, eval_cache, cache_dir) change no output, so changing one
    reruns no stage but `validate`, whose stamp does not change."""
    assert _stage("data")[1]["params"] == ["data.${key}.root"]
