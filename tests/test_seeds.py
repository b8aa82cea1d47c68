"""The training-stage skeleton (pipeline.seeds.train_seeds): what it guarantees every stage that trains seeds."""

from types import SimpleNamespace

import pytest

from gattanet.engine import distributed
from pipeline import seeds


def stage_parts(tmp_path, calls: list, resumed: float = 0.0):
    """train/evaluate/save/write that log their calls; each job's resume file is created as fit would keep it."""
    def resume_of(job):
        return tmp_path / f"resume-{job}.pt"

    def train(job, resume, on_epoch):
        resume.write_text("kept")
        calls.append(("train", job, on_epoch is not None))
        return f"model-{job}", SimpleNamespace(resumed_seconds=resumed, history=[])

    def evaluate(models):
        calls.append(("evaluate", list(models)))
        return "hits"

    def write(trained, evaluated):
        calls.append(("write", list(trained.models), evaluated, trained.seconds))

    return train, evaluate, write, resume_of


def test_jobs_train_in_order_then_evaluate_save_write_and_the_resume_files_go_last(tmp_path, monkeypatch):
    calls = []
    train, evaluate, write, resume_of = stage_parts(tmp_path, calls, resumed=100.0)
    cleared = []
    monkeypatch.setattr("pipeline.stages.clear_folder_outputs", lambda *a: cleared.append(a))

    def checked_write(trained, evaluated):
        assert all(resume_of(j).exists() for j in (0, 1)), "resume files removed before the outputs were written"
        write(trained, evaluated)

    seeds.train_seeds("train-attn", "k", [0, 1], train, evaluate, checked_write, resume_of=resume_of,
                      save=lambda job, model: calls.append(("save", job, model)))
    assert calls[:5] == [("train", 0, False), ("train", 1, False), ("evaluate", [0, 1]),
                         ("save", 0, "model-0"), ("save", 1, "model-1")]
    assert cleared == [("train-attn", "k")]
    (what, models, evaluated, secs), = calls[5:]
    assert (what, models, evaluated) == ("write", [0, 1], "hits")
    assert 200.0 <= secs < 210.0  # the clock plus both seeds' training time resumed from a killed process
    assert not any(resume_of(j).exists() for j in (0, 1))


def test_a_failed_write_keeps_the_resume_files(tmp_path):
    calls = []
    train, evaluate, _, resume_of = stage_parts(tmp_path, calls)

    def write(trained, evaluated):
        raise OSError("disk full")

    with pytest.raises(OSError):
        seeds.train_seeds("controls", "k", [0, 1], train, evaluate, write, resume_of=resume_of)
    assert all(resume_of(j).exists() for j in (0, 1)), "a rerun must resume the finished seeds"


def test_under_torchrun_only_the_main_process_evaluates_and_writes(tmp_path, monkeypatch):
    calls = []
    train, evaluate, write, resume_of = stage_parts(tmp_path, calls)
    monkeypatch.setattr(distributed, "training_done", lambda: False)
    seeds.train_seeds("baselines", "se", [3], train, evaluate, write, resume_of=resume_of)
    assert calls == [("train", 3, False)] and resume_of(3).exists()


def test_default_resume_files_are_the_stage_entrys_per_seed(tmp_path, monkeypatch):
    from pipeline.paths import RESUME

    seen = []

    def train(job, resume, on_epoch):
        seen.append(resume)
        return None, SimpleNamespace(resumed_seconds=0.0, history=[])

    monkeypatch.chdir(tmp_path)
    seeds.train_seeds("extend", "v", [0, 2], train, lambda m: None, lambda t, e: None)
    assert seen == [RESUME / "extend-v-seed0.pt", RESUME / "extend-v-seed2.pt"]
