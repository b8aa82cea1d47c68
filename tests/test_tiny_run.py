"""The shared tiny-run build's hand-over (tests/tiny_run.py): a waiting test process gets the built facts, the
build's own error, or an error naming a build that ended without a result, never a hang."""

import json

import pytest

from tests.tiny_run import BUILT, FAILED, LOG, copy_built, wait_built


def test_a_built_folder_hands_over_its_facts(tmp_path):
    facts = {"repo": str(tmp_path / "repo"), "remote": str(tmp_path / "remote"), "head": "abc", "cached": {"a": "1"}}
    (tmp_path / BUILT).write_text(json.dumps(facts))
    assert wait_built(tmp_path, timeout=5, alive=lambda: False) == facts  # written before the build ended


def test_a_failed_build_raises_its_own_error(tmp_path):
    (tmp_path / FAILED).write_text("Traceback ...\nAssertionError: dvc repro failed: stage pretrain")
    with pytest.raises(RuntimeError, match="dvc repro failed: stage pretrain"):
        wait_built(tmp_path, timeout=5)


def test_a_build_that_ended_without_a_result_is_named_with_its_log(tmp_path):
    (tmp_path / LOG).write_text("Killed")
    with pytest.raises(RuntimeError, match="ended without a result(.|\n)*Killed"):
        wait_built(tmp_path, timeout=5, alive=lambda: False)


def test_a_build_still_running_times_out(tmp_path):
    with pytest.raises(TimeoutError, match="took over 1 s"):
        wait_built(tmp_path, timeout=1, alive=lambda: True)


def test_each_copy_is_its_own_repo_with_the_shared_remote(tmp_path):
    built = tmp_path / "built"
    (built / "repo").mkdir(parents=True)
    (built / "repo" / "params.yaml").write_text("a: 1\n")
    facts = {"repo": str(built / "repo"), "remote": str(built / "remote"), "head": "abc", "cached": {}}
    mine = copy_built(facts, tmp_path / "mine")
    (mine["repo"] / "params.yaml").write_text("a: 2\n")
    assert (built / "repo" / "params.yaml").read_text() == "a: 1\n"
    assert mine["remote"] == built / "remote" and mine["head"] == "abc"
