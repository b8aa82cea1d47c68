"""The training loop: determinism, resume, early stopping, NaN guard, L2; bench output keys."""

import dataclasses
import logging
import time

import pytest
import torch
from torch import nn

from gattanet.data.augment import Augment
from gattanet.data.datasets import TensorData
from gattanet.data.loader import TensorLoader
from gattanet.engine.precision import autocast_dtype, precision_name
from gattanet.engine.resume import Resume, differences as _differences, fingerprint_parts as _fingerprint_parts
from gattanet.engine.train import NonFiniteLossError, Step, TrainConfig, fit
from tests.killed import Interrupted


class Tiny(nn.Module):
    """Linear -> ReLU -> dropout -> linear, times a learned scalar (not L2-decayed)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1, self.fc2 = nn.Linear(16, 8), nn.Linear(8, 2)
        self.drop = nn.Dropout(0.3)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(x.flatten(1))))) * self.scale


def make_data(n: int, seed: int, flip: bool = False) -> TensorData:
    """4x4 noisy images, label 1 when the left half is the bright one (0 with flip)."""
    g = torch.Generator().manual_seed(seed)
    left = torch.randint(0, 2, (n,), generator=g)
    images = torch.randint(0, 100, (n, 1, 4, 4), generator=g, dtype=torch.uint8)
    images[left == 1, :, :, :2] += 120
    images[left == 0, :, :, 2:] += 120
    return TensorData(images, left ^ int(flip), (0.5,), (0.3,), ("right", "left"))


def loaders(val_flip: bool = False):
    train = TensorLoader(make_data(48, 0), 8, shuffle=True, seed=1, augment=Augment(10, 0.1, False))
    return train, TensorLoader(make_data(24, 1, val_flip), 10)


def run(cfg: TrainConfig, train=None, val=None, seed: int = 0, resume_path=None, context=None, code=None, **kw):
    """fit of a fresh Tiny(seed); with `resume_path`, resumable there under `context` and `code`."""
    default_train, default_val = loaders()
    model = Tiny(seed)
    resume = Resume(resume_path, context=context, code=code) if resume_path is not None else None
    result = fit(model, model.parameters(), train or default_train, val or default_val, cfg,
                 progress=False, resume=resume, **kw)
    return model, result


def same_run(a, b) -> bool:
    (ma, ra), (mb, rb) = a, b
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    return strip(ra.history) == strip(rb.history) and all(
        torch.equal(x, y) for x, y in zip(ma.state_dict().values(), mb.state_dict().values()))


CFG = TrainConfig(epochs=5, patience=10, lr=0.01, l2=1e-3, seed=3)


def test_identical_fits_are_identical_and_learn(capsys):
    first = run(CFG)
    model = Tiny(0)
    train, val = loaders()
    shown = fit(model, model.parameters(), train, val, CFG, progress=True)  # non-TTY: must not break
    assert same_run(first, (model, shown))
    _, result = first
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5] and result.epochs_run == 5
    assert set(result.history[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"}
    assert result.best_val_acc == max(h["val_acc"] for h in result.history) > 0.7
    assert not result.stopped_early and result.seconds > 0
    assert result.precision == "fp32"
    cpu_amp = run(TrainConfig(**{**CFG.__dict__, "amp": True}))  # bf16 on a CPU that has it natively
    assert cpu_amp[1].precision == precision_name(autocast_dtype("cpu", True))
    assert same_run(first, cpu_amp) == (cpu_amp[1].precision == "fp32")  # elsewhere plain fp32
    assert not same_run(first, run(TrainConfig(**{**CFG.__dict__, "seed": 4})))  # dropout draws differ


def test_interrupted_then_resumed_fit_equals_uninterrupted(tmp_path):
    reference = run(CFG)
    resume = tmp_path / "resume" / "run.pt"
    train, val = loaders()
    killed = Interrupted(make_data(48, 0), 8, shuffle=True, seed=1, augment=Augment(10, 0.1, False), at=3)
    with pytest.raises(KeyboardInterrupt):
        run(CFG, train=killed, resume_path=resume)
    assert torch.load(resume, weights_only=True)["epoch"] == 2
    resumed = run(CFG, seed=99, resume_path=resume)  # weights come from the resume file
    assert same_run(reference, resumed)
    assert not resume.exists()


def test_resume_file_of_another_config_is_ignored(tmp_path, caplog):
    resume = tmp_path / "run.pt"
    killed = Interrupted(make_data(48, 0), 8, shuffle=True, seed=1, augment=Augment(10, 0.1, False), at=2)
    with pytest.raises(KeyboardInterrupt):
        run(CFG, train=killed, resume_path=resume)
    other = TrainConfig(**{**CFG.__dict__, "lr": 0.02})
    with caplog.at_level(logging.WARNING):
        restarted = run(other, resume_path=resume)
    assert "another configuration: starting fresh" in caplog.text
    assert same_run(restarted, run(other))


class SlowThenKilled(Interrupted):
    """Interrupted at epoch `at`, after `sleep` seconds in each epoch before it: training time to carry over."""

    def __init__(self, *args, sleep: float, **kw):
        super().__init__(*args, **kw)
        self.sleep = sleep

    def epoch(self, e):
        if e < self.at:
            time.sleep(self.sleep)
        yield from super().epoch(e)


def killed_after_epoch_2(resume, batch_size: int = 8, sleep: float = 0.3, context=None):
    killed = SlowThenKilled(make_data(48, 0), batch_size, shuffle=True, seed=1, augment=Augment(10, 0.1, False),
                            at=3, sleep=sleep)
    with pytest.raises(KeyboardInterrupt):
        run(CFG, train=killed, resume_path=resume, context=context)
    saved = torch.load(resume, weights_only=True)
    assert saved["epoch"] == 2 and saved["seconds"] >= 2 * sleep
    return saved["seconds"]


def test_kill_then_other_batch_size_starts_fresh_and_same_settings_resume_with_all_seconds(tmp_path, caplog):
    resume = tmp_path / "run.pt"
    killed_after_epoch_2(resume)
    other = TensorLoader(make_data(48, 0), 12, shuffle=True, seed=1, augment=Augment(10, 0.1, False))
    with caplog.at_level(logging.INFO, logger="gattanet.engine.train"):
        fresh = run(CFG, train=other, resume_path=resume)
    assert "another configuration: starting fresh; it differs in train_data.batch_size: 8 -> 12" in caplog.text
    assert "train_data.batches: 6 -> 4" in caplog.text and "resuming" not in caplog.text
    assert [h["epoch"] for h in fresh[1].history] == [1, 2, 3, 4, 5] and fresh[1].resumed_seconds == 0
    assert same_run(fresh, run(CFG, train=TensorLoader(make_data(48, 0), 12, shuffle=True, seed=1,
                                                       augment=Augment(10, 0.1, False))))
    assert not resume.exists()

    caplog.clear()
    before = killed_after_epoch_2(resume)
    with caplog.at_level(logging.INFO, logger="gattanet.engine.train"):
        resumed = run(CFG, resume_path=resume)
    assert "resuming after epoch 2" in caplog.text and "starting fresh" not in caplog.text
    assert same_run(resumed, run(CFG))
    result = resumed[1]
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5]
    assert result.resumed_seconds == pytest.approx(before) and result.seconds > before >= 0.6  # the slept epochs


def test_resume_fingerprint_covers_every_train_config_field_and_the_context(tmp_path, caplog):
    def parts(cfg, context=None):
        model = Tiny(0)
        train, val = loaders()
        return _fingerprint_parts(cfg, Step(model, model.parameters(), cfg), model, train, val, context)

    base = parts(CFG)
    for field in dataclasses.fields(TrainConfig):
        value = getattr(CFG, field.name)
        changed = {bool: lambda v: not v, int: lambda v: v + 1, float: lambda v: v * 2,
                   type(None): lambda v: 1}[type(value)](value)
        why = _differences(base, parts(dataclasses.replace(CFG, **{field.name: changed})))
        assert why.startswith(f"config.{field.name}: {value!r} -> {changed!r}"), (field.name, why)
    assert _differences(base, parts(CFG, {"data": "b"})) == "context"
    assert _differences(parts(CFG, {"data": "a", "backbone": "x"}), parts(CFG, {"data": "a", "backbone": "y"})) \
        == "context.backbone: 'x' -> 'y'"

    resume = tmp_path / "run.pt"  # a kill under one context, a rerun under another (e.g. new data)
    killed_after_epoch_2(resume, sleep=0.0, context={"data": "sha-a"})
    with caplog.at_level(logging.WARNING):
        fresh = run(CFG, resume_path=resume, context={"data": "sha-b"})
    assert "differs in context.data: 'sha-a' -> 'sha-b'" in caplog.text
    assert fresh[1].history[0]["epoch"] == 1 and same_run(fresh, run(CFG))


def test_resume_fingerprint_covers_frozen_weights_and_module_settings():
    def parts(model):
        train, val = loaders()
        trained = [model.fc2.weight, model.fc2.bias]
        return _fingerprint_parts(CFG, Step(model, trained, CFG), model, train, val, None)

    base = parts(Tiny(0))
    assert _differences(base, parts(Tiny(0))) == ""
    assert _differences(base, parts(Tiny(1))) == "frozen"  # fc1 and scale are not trained here
    model = Tiny(0)
    model.drop.p = 0.5
    assert _differences(base, parts(model)) == "modules.drop: {'type': 'Dropout', 'p': 0.3, 'inplace': False} " \
        "-> {'type': 'Dropout', 'p': 0.5, 'inplace': False}"


def test_early_stopping_stops_on_plateau_and_restores_best_weights():
    cfg = TrainConfig(epochs=40, patience=3, lr=0.02, seed=0)
    val = loaders(val_flip=True)[1]  # learning the training rule makes validation worse
    model, result = run(cfg, val=val)
    accs = [h["val_acc"] for h in result.history]
    assert result.stopped_early and result.epochs_run == result.best_epoch + cfg.patience < 40
    assert result.best_val_acc == max(accs) == accs[result.best_epoch - 1]
    assert all(a <= result.best_val_acc for a in accs[result.best_epoch:])
    short = run(TrainConfig(epochs=result.best_epoch, patience=3, lr=0.02, seed=0), val=val)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), short[0].state_dict().values()))


class NaNAt(TensorLoader):
    """Poisons one batch with NaN."""

    def __init__(self, *args, at: tuple[int, int], **kw):
        super().__init__(*args, **kw)
        self.at = at

    def epoch(self, e):
        for i, (x, y) in enumerate(super().epoch(e)):
            yield (x * float("nan") if (e, i + 1) == self.at else x), y


def test_nan_loss_raises_and_keeps_last_good_resume_state(tmp_path):
    resume = tmp_path / "run.pt"
    poisoned = NaNAt(make_data(48, 0), 8, shuffle=True, seed=1, augment=Augment(10, 0.1, False), at=(2, 2))
    with pytest.raises(NonFiniteLossError, match="non-finite loss at epoch 2, step 2"):
        run(CFG, train=poisoned, resume_path=resume)
    saved = torch.load(resume, weights_only=True)
    one_epoch, _ = run(TrainConfig(**{**CFG.__dict__, "epochs": 1}))
    assert saved["epoch"] == 1
    assert all(torch.equal(saved["model"][k], v) for k, v in one_epoch.state_dict().items())


def test_nan_on_first_step_takes_no_optimizer_step():
    model = Tiny(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train, val = loaders()
    poisoned = NaNAt(make_data(48, 0), 8, at=(1, 1))
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 1"):
        fit(model, model.parameters(), poisoned, val, CFG, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_l2_penalises_weight_tensors_only():
    model = Tiny(0).eval()
    x, y = torch.randn(5, 1, 4, 4), torch.tensor([0, 1, 1, 0, 1])
    step = Step(model, model.parameters(), TrainConfig(epochs=1, patience=1, lr=1e-3, l2=0.5))
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    step(x, y, 1, 1)
    plain = Tiny(0).eval()
    nn.functional.cross_entropy(plain(x), y).backward()
    for (name, p), (_, q) in zip(model.named_parameters(), plain.named_parameters()):
        extra = 2 * 0.5 * weights[name] if p.dim() >= 2 else 0
        assert torch.allclose(p.grad, q.grad + extra, atol=1e-6), name


def test_max_batches_and_config_validation():
    seen = []

    class Counting(TensorLoader):
        def epoch(self, e):
            for batch in super().epoch(e):
                seen.append(e)
                yield batch

    train = Counting(make_data(48, 0), 8)
    run(TrainConfig(epochs=2, patience=5, lr=0.01, max_batches=2), train=train)
    assert seen == [1, 1, 2, 2]
    with pytest.raises(ValueError, match="patience"):
        TrainConfig(epochs=1, patience=0, lr=0.1)
    with pytest.raises(ValueError, match="lr must be > 0"):
        TrainConfig(epochs=1, patience=1, lr=0.0)


def test_bench_reports_all_measures_in_each_precision_and_targets():
    from gattanet.cost.bench import run_bench

    result = run_bench(n_images=16, batch_size=16, warmup=0, repeats=1)
    models = {"bare_loop", "pretrain_step", "attn_step", "backbone_infer", "gattanet_infer",
              "eval_shared", "eval_naive"}
    rates = result["img_per_s"]
    assert set(rates["fp32"]) == models | {"loader"}  # the loader runs no model: measured once
    assert ("bf16" in rates) != ("bf16" in result["not_measured"])  # a figure, or why there is none
    assert all(set(r) == models for p, r in rates.items() if p != "fp32")
    assert all(v > 0 for r in rates.values() for v in r.values())
    assert set(result["eval_shared_vs_naive"]) == set(rates)
    assert set(result["targets"]) == {
        "pretrain_vs_bare", "attn_vs_pretrain", "gattanet_vs_backbone_infer", "loader_vs_pretrain"}
    assert set(result["ratios"]) == set(rates)  # every target in every precision measured
    for p, r in rates.items():
        assert set(result["ratios"][p]) == set(result["targets"])
        assert result["ratios"][p]["attn_vs_pretrain"] == pytest.approx(r["attn_step"] / r["pretrain_step"])
        assert result["ratios"][p]["loader_vs_pretrain"] == pytest.approx(rates["fp32"]["loader"] / r["pretrain_step"])
    assert result["device"] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_bench_without_native_bf16_says_so(monkeypatch):
    import gattanet.cost.bench as bench

    monkeypatch.setattr(bench.precision, "autocast_dtype", lambda device, amp: None)
    monkeypatch.setattr(bench, "_best_rates", lambda runs, n, *_: {k: float(n) for k in runs})  # no timing
    result = bench.run_bench(device="cpu", n_images=16, batch_size=16)
    assert list(result["img_per_s"]) == ["fp32"] and list(result["eval_shared_vs_naive"]) == ["fp32"]
    assert result["not_measured"] == {"bf16": "not native on this CPU"}


def test_timed_counts_the_work_and_synchronises_cuda_around_it(monkeypatch):
    from gattanet.cost.bench import timed

    assert timed(lambda: time.sleep(0.05), "cpu") >= 0.05
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(("sync", str(device))))
    timed(lambda: calls.append("work"), torch.device("cuda", 0))  # no GPU needed: the sync is recorded
    assert calls == [("sync", "cuda:0"), "work", ("sync", "cuda:0")]
    calls.clear()
    timed(lambda: calls.append("work"), "cpu")
    assert calls == ["work"]


# ---------------------------------------------------------------- issue 35: stopping past the validation noise


def _stop(curve, patience: int) -> tuple[int, int]:
    """(best epoch restored, epochs run) of early stopping (TrainState.record, the loop's rule) on a val curve."""
    from gattanet.engine.resume import TrainState

    model = nn.Linear(1, 1, bias=False)
    state = TrainState.fresh(model)
    for epoch, acc in enumerate(curve, 1):
        state.record({"epoch": epoch, "val_acc": float(acc)}, model, patience)
        if state.stopped:
            break
    return state.best_epoch, state.epoch


def test_patience_three_stops_past_the_validation_noise_on_a_noisy_rising_curve():
    """An attention run's val curve as measured (issue 35): a rise of 0.3 pts (time constant 3 epochs) under
    epoch-to-epoch noise of 0.1 pts sd (changes 0.03-0.2 pts). Patience 1, a tie no improvement, stops in the noise:
    half the runs restore epoch 1-2 and leave half the rise on the table; patience 3 (the profiles' rule) restores an
    epoch within the noise of the plateau, with the cap of 10 epochs."""
    import numpy as np

    rng = np.random.default_rng(0)
    true = lambda t: 0.90 + 0.003 * (1 - np.exp(-t / 3))  # noqa: E731
    epochs = np.arange(1, 11)
    outcome = {1: [], 3: []}
    for _ in range(1000):
        curve = true(epochs) + rng.normal(0, 0.001 / np.sqrt(2), len(epochs))  # change sd 0.1 pts
        for patience in outcome:
            best, run = _stop(curve, patience)
            outcome[patience].append((true(10) - true(best), best <= 2, run))
    lost = {p: np.mean([o[0] for o in v]) for p, v in outcome.items()}
    early = {p: np.mean([o[1] for o in v]) for p, v in outcome.items()}
    assert early[1] > 0.4 and lost[1] > 0.0011  # patience 1: more than a third of the 0.3-pt rise lost
    assert early[3] < 0.15 and lost[3] < 0.0006  # patience 3: under the per-epoch noise (0.07 pts sd)
    assert np.mean([o[2] for o in outcome[3]]) <= 10


def test_the_profiles_train_attention_and_its_controls_under_one_stopping_rule():
    """Every toy attention run of the CPU profiles stops on patience 3 (cap 10), and the controls take their run's
    epochs and patience (pipeline/stages/controls.py): equal budget."""
    from pathlib import Path

    from pipeline.profiles import compose

    root = Path(__file__).resolve().parents[1]
    for name in ("default", "full", "backbones", "extensions", "related-addon", "related-scratch"):
        params = compose(name)
        for key, run in params["attention"].items():
            arch = params["backbones"][run["backbone"]]["arch"]
            if arch == "toy" and run.get("epochs", 0) > 2:
                assert (run["patience"], run["epochs"]) == (3, 10), (name, key)
    tiny = compose("tiny")
    assert all(r["patience"] == 3 and r["epochs"] == 1 for r in tiny["attention"].values())  # fast: one epoch
    controls = (root / "pipeline/stages/controls.py").read_text()
    assert "TrainConfig(epochs=att.epochs, patience=att.patience" in controls
