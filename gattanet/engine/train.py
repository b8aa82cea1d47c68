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

from gattanet.engine import distributed

from gattanet.engine import precision
from gattanet.engine.distributed import SINGLE, World
from gattanet.errors import InputError
from gattanet.io import atomic_path
from gattanet.data.loader import Loader
from gattanet.data.noise import derive_seed

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
    seconds: float  # training time of the whole run: this call's plus `resumed_seconds`
    precision: str  # what the steps computed in: "bf16", "fp16" or "fp32" (see gattanet.engine.precision)
    resumed_seconds: float = 0.0  # training time of the earlier (killed) calls this one resumed, up to
    # their last saved epoch; a stage that times itself adds it to its own clock


class NonFiniteLossError(InputError, RuntimeError):
    """The loss became NaN or infinite; no optimizer step was taken on it."""


class Step:
    """One optimisation step as fit takes it: forward (autocast with cfg.amp where the device has a
    native half type, see gattanet.engine.precision), cross-entropy plus l2 * sum(w**2) over the weight
    tensors (dim >= 2), NaN guard, backward (loss-scaled in fp16 only), Adam step.
    `model` may be the DistributedDataParallel wrapper of the model whose `params` are trained."""

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

    def __call__(self, x: Tensor, y: Tensor, epoch: int, step: int, share: float = 1.0) -> tuple[float, int]:
        """Train on one batch; returns (cross-entropy, number correct). `share` weights the cross-entropy:
        a rank's share of a global batch (see gattanet.engine.distributed.share_weight), 1 in one process."""
        with self.autocast():
            logits = self.model(x)
            ce = F.cross_entropy(logits.float(), y)
        weighted = ce * share if share != 1.0 else ce
        loss = weighted + self.cfg.l2 * sum(p.square().sum() for p in self.decayed) if self.decayed else weighted
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


def _fingerprint_parts(cfg: TrainConfig, step: Step, model: nn.Module, train: Loader, val: Loader,
                       context: dict | None, world: World = SINGLE) -> dict:
    """Everything that shapes a training, by part (JSON-able), for the resume check: a resume file is
    used only if every part is the same. `config`: every TrainConfig field (from the dataclass, so a new
    field is covered); `trained`: the trained tensors' shapes and dtypes; `frozen`: sha256 of the
    model's other tensors (a frozen backbone's weights, initial buffers); `modules`: each module's
    scalar settings (dropout p, attention dim, lesion, iterations, ...); `compute`: device type,
    precision and number of processes; `train_data`/`val_data`: the loaders' size, batch size, order seed, augmentation, noise;
    `context`: the caller's (run params, data sha256, backbone sha256, ...)."""
    return {"config": {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)},
            "trained": [[list(p.shape), str(p.dtype)] for p in step.params],
            "frozen": _frozen_digest(model, step.params),
            "modules": _module_settings(model),
            "compute": {"device": step.device.type, "precision": step.precision, "processes": world.size},
            "train_data": _loader_key(train), "val_data": _loader_key(val),
            "context": context}


def _fingerprint(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()


def _frozen_digest(model: nn.Module, trained: list[nn.Parameter]) -> str:
    """sha256 of the model's parameters and buffers that are not trained, in a layout-free spelling."""
    ids = {id(p) for p in trained}
    h = hashlib.sha256()
    for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
        if id(t) in ids:
            continue
        t = t.detach().to("cpu", memory_format=torch.contiguous_format)
        h.update(f"{name} {t.dtype} {list(t.shape)};".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


_SCALARS = (bool, int, float, str, type(None))
_TORCH_INTERNALS = {"training", "_is_full_backward_hook"}


def _module_settings(model: nn.Module) -> dict:
    """{module name: its plain scalar attributes} (nn.Module bookkeeping left out)."""
    settings = {}
    for name, module in model.named_modules():
        own = {k: v for k, v in vars(module).items() if isinstance(v, _SCALARS) and k not in _TORCH_INTERNALS}
        if own:
            settings[name or "."] = {"type": type(module).__name__} | own
    return settings


def _loader_key(loader: Loader) -> dict:
    """What of a loader shapes a training: its size and, where it has them, batch size, shuffling,
    order seed, augmentation and noise (its images are the caller's `context`: the data file's sha256)."""
    key = {"num_samples": loader.num_samples, "batches": len(loader)}
    for name in ("batch_size", "shuffle", "seed", "augment"):
        if hasattr(loader, name):
            value = getattr(loader, name)
            key[name] = value if isinstance(value, _SCALARS) else repr(value)
    finish = getattr(loader, "finish", None)
    for name in ("sigma", "noise_seed", "clip"):
        if hasattr(finish, name):
            key[name] = getattr(finish, name)
    return key


def _shown(a, b, width: int = 60) -> str:
    """`a!r -> b!r`; long values cut to a window around their first difference."""
    ra, rb = repr(a), repr(b)
    if len(ra) <= width and len(rb) <= width:
        return f"{ra} -> {rb}"
    i = next((i for i, (x, y) in enumerate(zip(ra, rb)) if x != y), min(len(ra), len(rb)))
    lo = max(0, i - width // 3)
    cut = lambda r: ("..." if lo else "") + r[lo:lo + width] + ("..." if lo + width < len(r) else "")  # noqa: E731
    return f"{cut(ra)} -> {cut(rb)}"


def _differences(old: dict, new: dict) -> str:
    """Which parts (and, in dict parts, which entries) of two fingerprints differ, old -> new."""
    out = []
    for part in list(new) + [p for p in old if p not in new]:
        a, b = old.get(part), new.get(part)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            keys = [k for k in sorted(set(a) | set(b), key=str) if a.get(k) != b.get(k)]
            shown = [f"{part}.{k}: {_shown(a.get(k), b.get(k))}" for k in keys[:4]]
            out.append(", ".join(shown) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else ""))
        else:
            out.append(part)
    return "; ".join(out)


def _clone_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _load_resume(path: Path, parts: dict, label: str) -> dict | None:
    """The resume state at `path` if it was made under the same fingerprint `parts`; else None, with a
    warning that says why (which parts differ)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        log.warning("%s: resume file %s unreadable (%s): starting fresh", label, path, e)
        return None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT or "parts" not in state:
        log.warning("%s: resume file %s belongs to another configuration: starting fresh; it is not a resume "
                    "file of this version", label, path)
        return None
    if state.get("fingerprint") != _fingerprint(parts):
        try:
            why = _differences(json.loads(state["parts"]), json.loads(json.dumps(parts, default=repr)))
        except (TypeError, ValueError):
            why = "unreadable fingerprint"
        log.warning("%s: resume file %s belongs to another configuration: starting fresh; it differs in %s",
                    label, path, why or "its fingerprint")
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
    a resume file made under another context is not resumed. The resume check covers more than `context`
    (see _fingerprint_parts); a mismatch starts fresh with a warning naming what differs.
    `seconds` of the result counts the whole run: this call plus the training time that the resume file
    carried over from earlier calls (up to their last saved epoch), which is also `resumed_seconds`.

    Under torchrun (a process group initialised, see gattanet.engine.distributed), every rank calls fit with
    `train` sharded for its rank: the model trains as DistributedDataParallel, each rank validates on
    the whole of `val` (so every rank takes the same early-stopping decision), and only rank 0 writes
    the resume file, which every rank reads."""
    clock = time.perf_counter()
    world = distributed.current()
    if getattr(train, "world", SINGLE) != world:
        raise ValueError(f"the training loader is sharded for {getattr(train, 'world', SINGLE)}, but this process "
                         f"is rank {world.rank} of {world.size}: build it with world=gattanet.engine.distributed.current()")
    params = list(params)
    if not params:
        raise ValueError("no parameters to train")
    device = params[0].device
    if precision.autocast_dtype(device, cfg.amp) is not None:  # NHWC is what half-precision kernels want,
        model.to(memory_format=torch.channels_last)             # tensor cores and oneDNN alike
    step = Step(distributed.data_parallel(model, world, device), params, cfg)  # DDP wraps after the layout change
    resume_path = Path(resume_path) if resume_path is not None else None
    state = fingerprint = parts_json = None
    if resume_path is not None:
        parts = _fingerprint_parts(cfg, step, model, train, val, context, world)
        fingerprint, parts_json = _fingerprint(parts), json.dumps(parts, sort_keys=True, default=repr)
        state = _load_resume(resume_path, parts, label)
    resumed_seconds = 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        step.optimizer.load_state_dict(state["optimizer"])
        step.scaler.load_state_dict(state["scaler"])
        best_state = {k: v.to(device) for k, v in state["best_state"].items()}
        start, history = state["epoch"] + 1, state["history"]
        best_acc, best_epoch, bad, stopped = (state["best_acc"], state["best_epoch"], state["bad"],
                                              state["stopped"])
        resumed_seconds = float(state["seconds"])
        log.info("%s: resuming after epoch %d from %s (%.1f s of training before)", label, state["epoch"],
                 resume_path, resumed_seconds)
    else:
        best_state, start, history = _clone_state(model), 1, []
        best_acc, best_epoch, bad, stopped = -1.0, 0, 0, False

    with _progress(progress and world.is_main) as bar:
        for epoch in range(start, cfg.epochs + 1):
            if stopped:
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
            if resume_path is not None and world.is_main:
                with atomic_path(resume_path) as tmp:
                    torch.save({"format": RESUME_FORMAT, "fingerprint": fingerprint, "parts": parts_json,
                                "seconds": resumed_seconds + time.perf_counter() - clock,
                                "model": model.state_dict(), "optimizer": step.optimizer.state_dict(),
                                "scaler": step.scaler.state_dict(), "epoch": epoch,
                                "best_state": best_state, "best_acc": best_acc,
                                "best_epoch": best_epoch, "bad": bad, "stopped": stopped,
                                "history": history}, tmp)

    model.load_state_dict(best_state)
    if resume_path is not None and not keep_resume and world.is_main:
        resume_path.unlink(missing_ok=True)
    return TrainResult(history=history, best_epoch=best_epoch, best_val_acc=best_acc,
                       epochs_run=len(history), stopped_early=stopped,
                       seconds=resumed_seconds + time.perf_counter() - clock, precision=step.precision,
                       resumed_seconds=resumed_seconds)
