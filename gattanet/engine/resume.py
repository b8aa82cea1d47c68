"""Resuming a training after a kill: what `fit` carries from epoch to epoch (`TrainState`), where and under
which conditions it is saved (`Resume`), and the fingerprint a resume file must match to be taken up: every
TrainConfig field, the model, the loaders, the caller's context, and the code that trains (`code_digest`)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from gattanet.world import SINGLE, World
from gattanet.io import atomic_path

log = logging.getLogger(__name__)
RESUME_FORMAT = "gattanet-resume"


@dataclass(frozen=True)
class Resume:
    """Where `fit` saves its progress after every epoch, and what must match for a saved file to be resumed.
    `keep`: leave the file when training ends (a caller training several models keeps the finished ones until
    all are saved); `context` (JSON-able): whatever else shapes the training (params, data and backbone
    hashes); `code`: a digest of the code that trains (`code_digest`): a file written by other code is
    discarded, since its optimiser state came from what may have been a bug."""
    path: Path
    keep: bool = False
    context: dict | None = None
    code: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))


@dataclass
class TrainState:
    """The loop's state after `epoch` epochs: their history, the best weights and validation accuracy so far,
    early stopping's count of epochs without improvement, and the training seconds of earlier (killed) calls."""
    best_state: dict[str, Tensor]
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_acc: float = -1.0
    best_epoch: int = 0
    bad: int = 0
    stopped: bool = False
    seconds: float = 0.0

    @classmethod
    def fresh(cls, model: nn.Module) -> TrainState:
        return cls(best_state=clone_state(model))

    def record(self, row: dict, model: nn.Module, patience: int) -> None:
        """Epoch `row["epoch"]` done: keep the model's weights if its val_acc is the best, else count it."""
        self.epoch = row["epoch"]
        self.history.append(row)
        if row["val_acc"] > self.best_acc:
            self.best_acc, self.best_epoch, self.bad, self.best_state = row["val_acc"], self.epoch, 0, clone_state(model)
        else:
            self.bad += 1
            self.stopped = self.bad >= patience


def clone_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class ResumeFile:
    """A `Resume` file under one fingerprint: `load` the saved state if it matches, `save` after an epoch."""

    def __init__(self, resume: Resume, parts: dict, label: str) -> None:
        self.resume, self.parts, self.label = resume, parts, label
        self.fingerprint = fingerprint(parts)
        self.parts_json = json.dumps(parts, sort_keys=True, default=repr)

    @property
    def path(self) -> Path:
        return self.resume.path

    def load(self) -> dict | None:
        """The saved payload if it was written by the same code under the same fingerprint; else None, with a
        warning that says why (other code, or which parts differ)."""
        path, label = self.path, self.label
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
        if self.resume.code is not None and state.get("code") != self.resume.code:
            log.warning("%s: resume file %s was written by other code; starting over", label, path)
            return None
        if state.get("fingerprint") != self.fingerprint:
            try:
                why = differences(json.loads(state["parts"]), json.loads(json.dumps(self.parts, default=repr)))
            except (TypeError, ValueError):
                why = "unreadable fingerprint"
            log.warning("%s: resume file %s belongs to another configuration: starting fresh; it differs in %s",
                        label, path, why or "its fingerprint")
            return None
        return state

    def save(self, state: TrainState, model: nn.Module, optimizer, scaler, seconds: float) -> None:
        """Write the state after `state.epoch` atomically; `seconds`: training time so far, earlier calls included."""
        with atomic_path(self.path) as tmp:
            torch.save({"format": RESUME_FORMAT, "fingerprint": self.fingerprint, "parts": self.parts_json,
                        "code": self.resume.code, "seconds": seconds,
                        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict(), "epoch": state.epoch,
                        "best_state": state.best_state, "best_acc": state.best_acc,
                        "best_epoch": state.best_epoch, "bad": state.bad, "stopped": state.stopped,
                        "history": state.history}, tmp)

    def resume_into(self, saved: dict, model: nn.Module, optimizer, scaler, device: torch.device) -> TrainState | None:
        """Load `saved` into the model, optimizer and scaler and return its TrainState. A file whose header
        matched but whose content cannot be used (a part missing, a tensor of another shape, non-finite
        weights or optimizer state) leaves all three as they were and gives None, with a warning naming it:
        the training starts fresh rather than failing on every rerun."""
        before = (clone_state(model), copy.deepcopy(optimizer.state_dict()), copy.deepcopy(scaler.state_dict()))
        try:
            own = model.state_dict()
            for part in ("model", "best_state"):
                _check_tensors(saved[part], own, part)
            _check_tensors({f"optimizer state {k}.{n}": v for k, s in saved["optimizer"]["state"].items()
                            for n, v in s.items() if isinstance(v, Tensor)}, None, "optimizer")
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scaler.load_state_dict(saved["scaler"])
            return self.state_of(saved, device)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            model.load_state_dict(before[0])
            optimizer.load_state_dict(before[1])
            scaler.load_state_dict(before[2])
            log.warning("%s: resume file %s cannot be used (%s: %s): starting fresh", self.label, self.path,
                        type(e).__name__, " ".join(str(e).split())[:200])
            return None

    @staticmethod
    def state_of(saved: dict, device: torch.device) -> TrainState:
        """The TrainState a loaded payload holds (its best weights on `device`)."""
        return TrainState(best_state={k: v.to(device) for k, v in saved["best_state"].items()},
                          epoch=saved["epoch"], history=saved["history"], best_acc=saved["best_acc"],
                          best_epoch=saved["best_epoch"], bad=saved["bad"], stopped=saved["stopped"],
                          seconds=float(saved["seconds"]))


def _check_tensors(tensors: dict, like: dict | None, part: str) -> None:
    """ValueError unless `tensors` are finite and, with `like`, have exactly its names and shapes."""
    if like is not None:
        wrong = [k for k in like if k not in tensors or tuple(tensors[k].shape) != tuple(like[k].shape)]
        wrong += [k for k in tensors if k not in like]
        if wrong:
            raise ValueError(f"{part}: {wrong[0]!r} missing, unexpected or of another shape")
    bad = next((k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise ValueError(f"{part}: non-finite values in {bad!r}")


def code_digest(packages: Sequence[str]) -> str:
    """sha256 of the source of every module of `packages` loaded in this process (name and bytes, by name):
    what a training ran, for `Resume.code`. Compute it at the same point of a run (e.g. once, before the
    first training) so that the same code gives the same set of loaded modules."""
    h = hashlib.sha256()
    for name in sorted(sys.modules):
        if name.partition(".")[0] not in packages:
            continue
        path = getattr(sys.modules[name], "__file__", None)
        if path and path.endswith(".py") and Path(path).is_file():
            h.update(f"{name}\0".encode())
            h.update(Path(path).read_bytes())
            h.update(b"\0")
    return h.hexdigest()


def fingerprint_parts(cfg, step, model: nn.Module, train, val, context: dict | None, world: World = SINGLE) -> dict:
    """Everything that shapes a training, by part (JSON-able), for the resume check: a resume file is
    used only if every part is the same. `config`: every field of the TrainConfig `cfg` (from the dataclass,
    so a new field is covered); `trained`: the trained tensors' shapes and dtypes (`step.params`); `frozen`:
    sha256 of the model's other tensors (a frozen backbone's weights, initial buffers); `modules`: each
    module's scalar settings (dropout p, attention dim, lesion, iterations, ...); `compute`: device type,
    precision and number of processes; `train_data`/`val_data`: the loaders' size, batch size, order seed,
    augmentation, noise; `context`: the caller's (run params, data sha256, backbone sha256, ...)."""
    return {"config": {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)},
            "trained": [[list(p.shape), str(p.dtype)] for p in step.params],
            "frozen": _frozen_digest(model, step.params),
            "modules": _module_settings(model),
            "compute": {"device": step.device.type, "precision": step.precision, "processes": world.size},
            "train_data": _loader_key(train), "val_data": _loader_key(val),
            "context": context}


def fingerprint(parts: dict) -> str:
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


def _loader_key(loader) -> dict:
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


def differences(old: dict, new: dict) -> str:
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
