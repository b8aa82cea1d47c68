"""Resume files record the code that wrote them: other code starts over (with a log line); the same code resumes.
The per-epoch callback sees each epoch this call trains."""

import importlib
import logging
import sys

import pytest
import torch
from torch import nn

from gattanet.data.datasets import TensorData
from gattanet.data.loader import TensorLoader
from gattanet.engine.resume import Resume, code_digest
from gattanet.engine.train import TrainConfig, fit
from tests.killed import Interrupted

CFG = TrainConfig(epochs=4, patience=10, lr=0.05, seed=2)


def data(n: int, seed: int) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.randint(0, 100, (n, 1, 2, 2), generator=g, dtype=torch.uint8)
    images[labels == 1, :, 0] += 120
    return TensorData(images, labels, (0.5,), (0.3,), ("a", "b"))


def train(resume=None, killed_at=None, on_epoch=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    loader = Interrupted(data(32, 0), 8, shuffle=True, seed=1, at=killed_at)
    result = fit(model, model.parameters(), loader, TensorLoader(data(16, 1), 8), CFG, resume=resume,
                 progress=False, on_epoch=on_epoch)
    return model, result


def killed_after_epoch_2(path, code):
    with pytest.raises(KeyboardInterrupt):
        train(Resume(path, code=code), killed_at=3)
    assert torch.load(path, weights_only=True)["epoch"] == 2


def test_a_resume_file_written_by_other_code_starts_over_and_says_so(tmp_path, caplog):
    path = tmp_path / "run.pt"
    reference_model, reference = train()
    killed_after_epoch_2(path, code="digest-a")
    seen = []
    with caplog.at_level(logging.INFO):
        model, result = train(Resume(path, code="digest-b"), on_epoch=seen.append)
    assert f"resume file {path} was written by other code; starting over" in caplog.text
    assert "resuming" not in caplog.text
    assert [r["epoch"] for r in seen] == [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    assert result.resumed_seconds == 0
    assert [r["val_loss"] for r in result.history] == [r["val_loss"] for r in reference.history]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference_model.state_dict().values()))
    assert not path.exists()


def test_the_same_code_resumes_and_the_callback_sees_only_the_epochs_it_trains(tmp_path, caplog):
    path = tmp_path / "run.pt"
    reference_model, reference = train()
    killed_after_epoch_2(path, code="digest-a")
    seen = []
    with caplog.at_level(logging.INFO):
        model, result = train(Resume(path, code="digest-a", keep=True), on_epoch=seen.append)
    assert "resuming after epoch 2" in caplog.text and "other code" not in caplog.text
    assert [r["epoch"] for r in seen] == [3, 4]
    assert seen == result.history[2:] and seen[0] is not result.history[2]  # a copy: the history stays as it is
    assert [r["val_loss"] for r in result.history] == [r["val_loss"] for r in reference.history]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference_model.state_dict().values()))
    assert path.exists()  # keep=True


def test_code_digest_follows_the_source_of_the_loaded_modules_of_the_named_packages(tmp_path, monkeypatch):
    package = tmp_path / "digestpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("digestpkg.mod")
    try:
        before = code_digest(("digestpkg",))
        assert code_digest(("digestpkg",)) == before and code_digest(("gattanet",)) != before
        (package / "mod.py").write_text("X = 2\n")  # edited after it was loaded: what a rerun would load
        assert code_digest(("digestpkg",)) != before
    finally:
        for name in [n for n in sys.modules if n.partition(".")[0] == "digestpkg"]:
            del sys.modules[name]


def test_the_pipeline_resumes_only_under_this_stages_code(tmp_path):
    from pipeline.runs import resume_at, stage_code

    stage_code.cache_clear()
    resume = resume_at(tmp_path / "x.pt", {"run": "k"})
    assert resume.code == code_digest(("gattanet", "pipeline"))  # taken once, when the first training starts
    assert resume.keep and resume.context == {"run": "k"}
    assert not resume_at(tmp_path / "x.pt", {}, keep=False).keep
