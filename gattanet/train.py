"""The training loop: Adam + Keras-style L2, early stopping on validation accuracy with the
best weights restored, per-epoch resume, a guard against non-finite losses, and history."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import math
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor, nn

from gattanet import precision
from gattanet.io import atomic_path
from gattanet.loader import Loader
from gattanet.noise import derive_seed

log = logging.getLogger(__name__)
RESUME_FORMAT = "gattanet-resume"


@dataclass
class TrainConfig:
    epochs: int
    patience: int
    lr: float
    l2: float = 0.0
    seed: int = 0
    amp: bool = False
    max_batches: int | None = None  # per epoch; None = the whole loader

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.patience < 1:
            raise ValueError(f"epochs and patience must be >= 1, got {self.epochs}, {self.patience}")
        if not self.lr > 0 or not self.l2 >= 0:
            raise ValueError(f"lr must be > 0 and l2 >= 0, got lr={self.lr}, l2={self.l2}")
        if self.max_batches is not None and self.max_batches < 1:
            raise ValueError(f"max_batches must be >= 1 or None, got {self.max_batches}")


@dataclass
class TrainResult:
    history: list[dict]  # per epoch: epoch, train_loss, train_acc, val_loss, val_acc, seconds
    best_epoch: int  # 1-based, as in history
    best_val_acc: float
    epochs_run: int
    stopped_early: bool
    seconds: float  # sum of the epochs' seconds, resumed ones included
    precision: str  # what the steps computed in: "bf16", "fp16" or "fp32" (see gattanet.precision)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; no optimizer step was taken on it."""


class Step:
    """One optimisation step as fit takes it: forward (autocast with cfg.amp where the device has a
    native half type, see gattanet.precision), cross-entropy plus l2 * sum(w**2) over the weight
    tensors (dim >= 2), NaN guard, backward (loss-scaled in fp16 only), Adam step."""

    def __init__(self, model: nn.Module, params: Iterable[nn.Parameter], cfg: TrainConfig) -> None:
        self.model, self.params, self.cfg = model, list(params), cfg
        if not self.params:
            raise ValueError("no parameters to train")
        self.decayed = [p for p in self.params if p.dim() >= 2] if cfg.l2 > 0 else []
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr)
        self.device = self.params[0].device
        self.amp_dtype = precision.autocast_dtype(self.device, cfg.amp)
        self.precision = precision.precision_name(self.amp_dtype)
        if cfg.amp and self.amp_dtype is None:
            log.info("amp requested on %s without a native half type: plain fp32", self.device.type)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def autocast(self) -> AbstractContextManager:
        """The context the forward runs in: autocast to amp_dtype, or a no-op in fp32."""
        return precision.autocast(self.device, self.amp_dtype)

    def __call__(self, x: Tensor, y: Tensor, epoch: int, step: int) -> tuple[float, int]:
        """Train on one batch; returns (cross-entropy, number correct)."""
        with self.autocast():
            logits = self.model(x)
            ce = F.cross_entropy(logits.float(), y)
        loss = ce + self.cfg.l2 * sum(p.square().sum() for p in self.decayed) if self.decayed else ce
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(f"non-finite loss at epoch {epoch}, step {step} ({loss_value})")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return ce.item(), int((logits.argmax(1) == y).sum())


def _n_batches(loader: Loader, cfg: TrainConfig) -> int:
    return len(loader) if cfg.max_batches is None else min(len(loader), cfg.max_batches)


def train_epoch(step: Step, loader: Loader, epoch: int, progress: Progress | None = None,
                label: str = "train") -> tuple[float, float]:
    """One epoch of `step` over `loader`; returns (mean cross-entropy, accuracy)."""
    step.model.train()
    n_batches = _n_batches(loader, step.cfg)
    task = progress.add_task(f"{label} epoch {epoch}", total=n_batches, stats="") \
        if progress is not None else None
    total_loss, correct, seen = 0.0, 0, 0
    for i, (x, y) in enumerate(itertools.islice(loader.epoch(epoch), n_batches)):
        loss, hits = step(x, y, epoch, i + 1)
        total_loss, correct, seen = total_loss + loss * len(y), correct + hits, seen + len(y)
        if progress is not None:
            progress.update(task, advance=1, stats=f"loss {total_loss / seen:.4f} acc {correct / seen:.4f}")
    if progress is not None:
        progress.remove_task(task)
    if seen == 0:
        raise ValueError("the training loader is empty")
    return total_loss / seen, correct / seen


@torch.no_grad()
def evaluate_loss_acc(model: nn.Module, loader: Loader, autocast=nullcontext) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` in eval mode over one pass of `loader`."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader.epoch(0):
        with autocast():
            logits = model(x).float()
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
    if seen == 0:
        raise ValueError("the validation loader is empty")
    return total_loss / seen, correct / seen


def _fingerprint(cfg: TrainConfig, params: list[nn.Parameter], context: dict | None = None) -> str:
    key = {"cfg": dataclasses.asdict(cfg), "shapes": [list(p.shape) for p in params], "context": context}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _clone_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _load_resume(path: Path, fingerprint: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        log.warning("resume file %s unreadable (%s): starting fresh", path, e)
        return None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT \
            or state.get("fingerprint") != fingerprint:
        log.warning("resume file %s belongs to another configuration: starting fresh", path)
        return None
    return state


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[stats]}"),
                    transient=True, disable=not enabled)


def fit(model: nn.Module, params: Iterable[nn.Parameter], train: Loader, val: Loader,
        cfg: TrainConfig, *, resume_path: str | Path | None = None, keep_resume: bool = False,
        context: dict | None = None, label: str = "train", progress: bool = True) -> TrainResult:
    """Train `params` of `model` on `train`, early-stopping on `val` accuracy (patience
    epochs, at most cfg.epochs); the model ends with its best weights. Epochs count from 1.
    With `resume_path`, progress is saved after every epoch and a matching file is resumed; the file
    is removed at the end unless `keep_resume` (a caller training several models in one stage keeps
    the finished ones until all are saved, so a kill costs at most the model in progress). `context`
    (JSON-able) is whatever else shapes the training — the caller's params, data and backbone hashes —:
    a resume file made under another context is not resumed."""
    step = Step(model, params, cfg)
    device = step.device
    if step.amp_dtype is not None:  # NHWC is what half-precision kernels want, tensor cores and oneDNN alike
        model.to(memory_format=torch.channels_last)
    fingerprint = _fingerprint(cfg, step.params, context)
    resume_path = Path(resume_path) if resume_path is not None else None
    state = _load_resume(resume_path, fingerprint) if resume_path is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        step.optimizer.load_state_dict(state["optimizer"])
        step.scaler.load_state_dict(state["scaler"])
        best_state = {k: v.to(device) for k, v in state["best_state"].items()}
        start, history = state["epoch"] + 1, state["history"]
        best_acc, best_epoch, bad, stopped = (state["best_acc"], state["best_epoch"], state["bad"],
                                              state["stopped"])
        log.info("%s: resuming after epoch %d from %s", label, state["epoch"], resume_path)
    else:
        best_state, start, history = _clone_state(model), 1, []
        best_acc, best_epoch, bad, stopped = -1.0, 0, 0, False

    with _progress(progress) as bar:
        for epoch in range(start, cfg.epochs + 1):
            if stopped:
                break
            t0 = time.perf_counter()
            torch.manual_seed(derive_seed(cfg.seed, epoch))  # dropout draws depend on seed+epoch only
            train_loss, train_acc = train_epoch(step, train, epoch, bar, label)
            val_loss, val_acc = evaluate_loss_acc(model, val, step.autocast)
            if not math.isfinite(val_loss):  # e.g. a finite loss whose step overflowed the weights
                raise NonFiniteLossError(f"non-finite validation loss at epoch {epoch}, step "
                                         f"{_n_batches(train, cfg)} (end of epoch)")
            history.append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                            "val_loss": val_loss, "val_acc": val_acc,
                            "seconds": time.perf_counter() - t0})
            if val_acc > best_acc:
                best_acc, best_epoch, bad, best_state = val_acc, epoch, 0, _clone_state(model)
            else:
                bad += 1
                stopped = bad >= cfg.patience
            log.info("%s epoch %d: train loss %.4f acc %.4f, val loss %.4f acc %.4f", label, epoch,
                     train_loss, train_acc, val_loss, val_acc)
            if resume_path is not None:
                with atomic_path(resume_path) as tmp:
                    torch.save({"format": RESUME_FORMAT, "fingerprint": fingerprint,
                                "model": model.state_dict(), "optimizer": step.optimizer.state_dict(),
                                "scaler": step.scaler.state_dict(), "epoch": epoch,
                                "best_state": best_state, "best_acc": best_acc,
                                "best_epoch": best_epoch, "bad": bad, "stopped": stopped,
                                "history": history}, tmp)

    model.load_state_dict(best_state)
    if resume_path is not None and not keep_resume:
        resume_path.unlink(missing_ok=True)
    return TrainResult(history=history, best_epoch=best_epoch, best_val_acc=best_acc,
                       epochs_run=len(history), stopped_early=stopped,
                       seconds=sum(h["seconds"] for h in history), precision=step.precision)
