"""The training loop: Adam + Keras-style L2, early stopping on validation accuracy with the
best weights restored, per-epoch resume (gattanet.engine.resume), a guard against non-finite losses,
history, and an optional per-epoch callback."""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor, nn

from gattanet.engine import distributed
from gattanet.engine import precision
from gattanet.world import SINGLE, World
from gattanet.engine.resume import Resume, ResumeFile, TrainState, fingerprint_parts
from gattanet.errors import InputError
from gattanet.data.loader import Loader
from gattanet.data.noise import derive_seed

log = logging.getLogger(__name__)


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
    seconds: float  # training time of the whole run: this call's plus `resumed_seconds`
    precision: str  # what the steps computed in: "bf16", "fp16" or "fp32" (see gattanet.engine.precision)
    resumed_seconds: float = 0.0  # training time of the earlier (killed) calls this one resumed, up to
    # their last saved epoch; a stage that times itself adds it to its own clock


class NonFiniteLossError(InputError, RuntimeError):
    """The loss became NaN or infinite; no optimizer step was taken on it."""


class Step:
    """One optimisation step as fit takes it: forward (autocast with cfg.amp where the device has a
    native half type, see gattanet.engine.precision), cross-entropy plus l2 * sum(w**2) over the weight
    tensors (dim >= 2), plus the model's own loss terms where it has an `extra_loss(logits, y)` (RAM's
    REINFORCE and baseline terms), NaN guard, backward (loss-scaled in fp16 only), Adam step.
    `model` may be the DistributedDataParallel wrapper of the model whose `params` are trained.
    `params`: parameters, or parameter groups as torch's optimizers take them ({"params": [...], "lr": ...}),
    where a group may also say "l2": False to keep its weights out of the penalty (a fine-tuned backbone's)."""

    def __init__(self, model: nn.Module, params: Iterable[nn.Parameter] | Iterable[dict], cfg: TrainConfig) -> None:
        groups = param_groups(params)
        self.model, self.params, self.cfg = model, [p for g in groups for p in g["params"]], cfg
        self.extra_loss = getattr(getattr(model, "module", model), "extra_loss", None)  # DDP wraps in .module
        if not self.params:
            raise ValueError("no parameters to train")
        self.decayed = [p for g in groups if g.get("l2", True) for p in g["params"] if p.dim() >= 2] \
            if cfg.l2 > 0 else []
        self.optimizer = torch.optim.Adam([{k: v for k, v in g.items() if k != "l2"} for g in groups], lr=cfg.lr)
        self.device = self.params[0].device
        self.amp_dtype = precision.autocast_dtype(self.device, cfg.amp)
        self.precision = precision.precision_name(self.amp_dtype)
        if cfg.amp and self.amp_dtype is None:
            log.info("amp requested on %s without a native half type: plain fp32", self.device.type)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def autocast(self) -> AbstractContextManager:
        """The context the forward runs in: autocast to amp_dtype, or a no-op in fp32."""
        return precision.autocast(self.device, self.amp_dtype)

    def __call__(self, x: Tensor, y: Tensor, epoch: int, step: int, share: float = 1.0) -> tuple[float, int]:
        """Train on one batch; returns (cross-entropy, number correct). `share` weights the cross-entropy:
        a rank's share of a global batch (see gattanet.engine.distributed.share_weight), 1 in one process."""
        with self.autocast():
            logits = self.model(x)
            ce = F.cross_entropy(logits.float(), y)
            own = ce + self.extra_loss(logits.float(), y) if self.extra_loss is not None else ce
        weighted = own * share if share != 1.0 else own
        loss = weighted + self.cfg.l2 * sum(p.square().sum() for p in self.decayed) if self.decayed else weighted
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(f"non-finite loss at epoch {epoch}, step {step} ({loss_value})")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return ce.item(), int((logits.argmax(1) == y).sum())


def param_groups(params: Iterable[nn.Parameter] | Iterable[dict]) -> list[dict]:
    """`params` as a list of parameter groups: plain parameters make one group ({"params": [...]})."""
    params = list(params)
    if all(isinstance(g, dict) for g in params) and params:
        return [dict(g, params=list(g["params"])) for g in params]
    if any(isinstance(g, dict) for g in params):
        raise ValueError("pass either parameters or parameter groups (dicts), not both")
    return [{"params": params}]


def _n_batches(loader: Loader, cfg: TrainConfig) -> int:
    return len(loader) if cfg.max_batches is None else min(len(loader), cfg.max_batches)


def train_epoch(step: Step, loader: Loader, epoch: int, progress: Progress | None = None,
                label: str = "train", world: World = SINGLE) -> tuple[float, float]:
    """One epoch of `step` over `loader`; returns (mean cross-entropy, accuracy). With several ranks,
    `loader` yields this rank's share of each global batch, and the returned figures are the global ones."""
    step.model.train()
    n_batches = _n_batches(loader, step.cfg)
    task = progress.add_task(f"{label} epoch {epoch}", total=n_batches, stats="") \
        if progress is not None else None
    total_loss, correct, seen = 0.0, 0, 0
    for i, (x, y) in enumerate(itertools.islice(loader.epoch(epoch), n_batches)):
        share = 1.0
        if world.size > 1:  # the global batch i holds min(batch_size, what is left) images
            whole = min(loader.batch_size, loader.num_samples - i * loader.batch_size)
            share = distributed.share_weight(len(y), whole, world)
        loss, hits = step(x, y, epoch, i + 1, share)
        total_loss, correct, seen = total_loss + loss * len(y), correct + hits, seen + len(y)
        if progress is not None:
            progress.update(task, advance=1, stats=f"loss {total_loss / seen:.4f} acc {correct / seen:.4f}")
    if progress is not None:
        progress.remove_task(task)
    total_loss, correct, seen = distributed.all_sum([total_loss, correct, seen], world, step.device)
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


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[stats]}"),
                    transient=True, disable=not enabled)


EpochCallback = Callable[[dict], None]


def fit(model: nn.Module, params: Iterable[nn.Parameter] | Iterable[dict], train: Loader, val: Loader,
        cfg: TrainConfig, *, resume: Resume | None = None, label: str = "train", progress: bool = True,
        on_epoch: EpochCallback | None = None) -> TrainResult:
    """Train `params` (or parameter groups, see Step) of `model` on `train`, early-stopping on `val` accuracy (patience
    epochs, at most cfg.epochs); the model ends with its best weights. Epochs count from 1.
    With `resume` (see gattanet.engine.resume.Resume), progress is saved after every epoch and a file
    written by the same code under the same fingerprint (cfg, model, loaders, the caller's context) is
    resumed; any other starts fresh with a warning naming what differs. `seconds` of the result counts the
    whole run: this call plus the training time that the resume file carried over from earlier calls (up to
    their last saved epoch), which is also `resumed_seconds`.
    `on_epoch(record)` is called after each epoch this call trains, on the main process, with a copy of
    that epoch's history record (epoch, train_loss, train_acc, val_loss, val_acc, seconds): e.g. a logger's.

    Under torchrun (a process group initialised, see gattanet.engine.distributed), every rank calls fit with
    `train` sharded for its rank: the model trains as DistributedDataParallel, each rank validates on
    the whole of `val` (so every rank takes the same early-stopping decision), and only rank 0 writes
    the resume file, which every rank reads."""
    clock = time.perf_counter()
    world = distributed.current()
    if getattr(train, "world", SINGLE) != world:
        raise ValueError(f"the training loader is sharded for {getattr(train, 'world', SINGLE)}, but this process "
                         f"is rank {world.rank} of {world.size}: build it with world=gattanet.engine.distributed.current()")
    params = param_groups(params)
    if not any(g["params"] for g in params):
        raise ValueError("no parameters to train")
    device = next(p for g in params for p in g["params"]).device
    if precision.autocast_dtype(device, cfg.amp) is not None:  # NHWC is what half-precision kernels want,
        model.to(memory_format=torch.channels_last)             # tensor cores and oneDNN alike
    step = Step(distributed.data_parallel(model, world, device), params, cfg)  # DDP wraps after the layout change
    saver = ResumeFile(resume, fingerprint_parts(cfg, step, model, train, val, resume.context, world), label) \
        if resume is not None else None
    saved = saver.load() if saver is not None else None
    state = saver.resume_into(saved, model, step.optimizer, step.scaler, device) if saved is not None else None
    if state is not None:
        log.info("%s: resuming after epoch %d from %s (%.1f s of training before)", label, state.epoch,
                 saver.path, state.seconds)
    else:
        state = TrainState.fresh(model)

    with _progress(progress and world.is_main) as bar:
        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            if state.stopped:
                break
            t0 = time.perf_counter()
            # dropout draws depend on seed and epoch only (and on the rank: ranks drop different units)
            torch.manual_seed(derive_seed(cfg.seed, epoch) if world.size == 1 else derive_seed(cfg.seed, epoch, world.rank))
            train_loss, train_acc = train_epoch(step, train, epoch, bar, label, world)
            # every rank validates on the whole split; rank 0's figures decide, so all stop together
            val_loss, val_acc = distributed.from_main(list(evaluate_loss_acc(model, val, step.autocast)), world, device)
            if not math.isfinite(val_loss):  # e.g. a finite loss whose step overflowed the weights
                raise NonFiniteLossError(f"non-finite validation loss at epoch {epoch}, step "
                                         f"{_n_batches(train, cfg)} (end of epoch)")
            state.record({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                          "val_loss": val_loss, "val_acc": val_acc, "seconds": time.perf_counter() - t0},
                         model, cfg.patience)
            log.info("%s epoch %d: train loss %.4f acc %.4f, val loss %.4f acc %.4f", label, epoch,
                     train_loss, train_acc, val_loss, val_acc)
            if saver is not None and world.is_main:
                saver.save(state, model, step.optimizer, step.scaler, state.seconds + time.perf_counter() - clock)
            if on_epoch is not None and world.is_main:
                on_epoch(dict(state.history[-1]))

    model.load_state_dict(state.best_state)
    if saver is not None and not resume.keep and world.is_main:
        saver.path.unlink(missing_ok=True)
    return TrainResult(history=state.history, best_epoch=state.best_epoch, best_val_acc=state.best_acc,
                       epochs_run=len(state.history), stopped_early=state.stopped,
                       seconds=state.seconds + time.perf_counter() - clock, precision=step.precision,
                       resumed_seconds=state.seconds)
