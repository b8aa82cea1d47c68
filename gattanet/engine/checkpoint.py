"""Checkpoints: atomic save, safe load (weights_only=True), metadata checks; backbone and GAttANet helpers.

A checkpoint is `{"format": "gattanet", "version": 1, "library_version", "meta", "state_dict"}`;
`meta["kind"]` is "backbone", "gattanet" or "adapter". An attention checkpoint records the sha256 of
the backbone checkpoint it was trained on, and loads only beside that exact file.

The bytes of a checkpoint depend only on its content: the same weights and meta saved twice, to any
path at any time, give the same file (and sha256), so DVC sees an identical retrain or a resumed run as
unchanged. Meta therefore holds no wall-clock time, duration or path (timings go to metrics.json).
"""

import hashlib
import pickle
import re
from pathlib import Path

import torch
from torch import Tensor

import gattanet
from gattanet.models.backbone import Backbone
from gattanet.models.registry import build_backbone
from gattanet.errors import InputError
from gattanet.io import save_torch
from gattanet.models.gattanet import GAttANet
from gattanet.models.spec import AttentionSpec
from gattanet.models.taps import Tap

CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "gattanet", 1


class CheckpointError(InputError):
    """A checkpoint is missing, unreadable, unsafe, not ours, or not the one expected."""


def save_checkpoint(path, state_dict: dict[str, Tensor], meta: dict) -> None:
    """Write the checkpoint atomically (a killed writer never leaves half a file) and byte-deterministically:
    tensors as contiguous CPU copies that own their storage (the same bytes whatever the memory format
    or device they were trained in), meta with its dicts' keys sorted, serialised by `io.torch_bytes`
    (no file name, timestamp or pickle back-reference in the bytes). The state_dict keeps its order."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "library_version": gattanet.__version__,
               "meta": _canonical(meta), "state_dict": {k: _canonical(v) for k, v in state_dict.items()}}
    save_torch(path, payload)


def _canonical(x):
    """Meta and tensors in one spelling: dicts key-sorted, tensors as compact contiguous CPU copies."""
    if isinstance(x, Tensor):
        return x.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
    if isinstance(x, dict):
        return {k: _canonical(x[k]) for k in sorted(x, key=lambda k: (type(k).__name__, str(k)))}
    if isinstance(x, (list, tuple)):
        return type(x)(_canonical(v) for v in x)
    return x


def _remedy(path: Path) -> str:
    """What to do about an unreadable or foreign checkpoint file: restore the committed one from the DVC
    cache first, and only if that does not help regenerate it."""
    return (f"restore it with `dvc checkout --force {path}`; if that fails (not in the DVC cache), "
            f"rerun `dvc repro {_writer_stage(path)}`")


def _cause(e: Exception) -> str:
    """The error torch.load raised, in one line: for weights_only refusals the unpickler's own words,
    without torch's advice to retry with weights_only=False (never the remedy for a file we wrote)."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    paragraphs = [p for p in re.split(r"\n\s*\n", str(e)) if p.strip() and not p.strip().startswith(boilerplate)]
    detail = " ".join(" ".join(paragraphs).replace("WeightsUnpickler error:", "").split())
    return f"{type(e).__name__}: {detail[:300]}"


def _writer_stage(path: Path) -> str:
    """The dvc.yaml stage that writes `path` (models/backbones/KEY.pt, models/attention/KEY/seed-N.pt)."""
    parts = Path(path).parts
    if len(parts) >= 2 and parts[-2] == "backbones":
        return f"pretrain@{Path(path).stem}"
    if len(parts) >= 3 and parts[-3] == "attention":
        return f"train-attn@{parts[-2]}"
    return "<the stage that writes it>"


def load_checkpoint(path, expect: dict | None = None) -> tuple[dict[str, Tensor], dict]:
    """(state_dict, meta) of a gattanet checkpoint; CheckpointError if it is not one or meta differs from `expect`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; run the stage that writes it "
                              "(e.g. `dvc repro`) or check the path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if isinstance(e, pickle.UnpicklingError) and "global" in str(e).lower():  # a class or function
            raise CheckpointError(f"{path}: refused to load: it holds objects other than tensors and plain "
                                  f"data (weights_only=True); {_remedy(path)} ({_cause(e)})") from e
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint; {_remedy(path)} ({_cause(e)})") from e
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a gattanet checkpoint (no format={CHECKPOINT_FORMAT!r} header); "
                              f"{_remedy(path)} (save checkpoints with gattanet.engine.checkpoint.save_checkpoint)")
    if obj.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {obj.get('version')!r}, this library "
                              f"reads version {CHECKPOINT_VERSION}; regenerate it: `dvc repro {_writer_stage(path)}`")
    meta = obj.get("meta")
    if not isinstance(meta, dict) or not isinstance(obj.get("state_dict"), dict):
        raise CheckpointError(f"{path}: malformed gattanet checkpoint (meta or state_dict missing); "
                              f"{_remedy(path)}")
    for key, want in (expect or {}).items():
        found = meta.get(key)
        if _plain(found) != _plain(want):
            raise CheckpointError(f"{path}: meta {key!r} is {found!r}, expected {want!r}")
    bad = next((k for k, v in obj["state_dict"].items()
                if isinstance(v, Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:  # a model of NaNs evaluates at chance without a word: refuse it by name
        raise CheckpointError(f"{path}: non-finite weights in {bad!r} (NaN or inf); {_remedy(path)}")
    return obj["state_dict"], meta


def backbone_meta(backbone: Backbone, dataset: str, classes) -> dict:
    """Everything needed to rebuild `backbone` and to check what it was trained on."""
    meta = {"kind": "backbone", "arch": backbone.arch, "dataset": dataset,
            "num_classes": backbone.num_classes, "in_channels": backbone.in_channels,
            "input_size": backbone.input_size, "classes": list(classes),
            "taps": [t.as_dict() for t in backbone.taps()]}
    if backbone.arch == "toy":
        meta.update(widths=list(backbone.widths), hidden=backbone.hidden, dropout=backbone.dropout)
    return meta


def save_backbone(path, backbone: Backbone, dataset: str, classes, meta_extra: dict | None = None) -> dict:
    """Save a backbone checkpoint; returns the meta written (backbone_meta + meta_extra)."""
    meta = backbone_meta(backbone, dataset, classes) | dict(meta_extra or {})
    save_checkpoint(path, backbone.state_dict(), meta)
    return meta


def load_backbone(path, device="cpu", expect: dict | None = None) -> tuple[Backbone, dict]:
    """Rebuild a saved backbone (built on the meta device, then given the saved tensors) on `device`."""
    state, meta = load_checkpoint(path, {"kind": "backbone"} | dict(expect or {}))
    kw = {k: meta[k] for k in ("widths", "hidden", "dropout") if k in meta}
    try:
        with torch.device("meta"):
            backbone = build_backbone(meta["arch"], meta["num_classes"], meta["in_channels"],
                                      input_size=meta["input_size"], **kw)
        backbone.load_state_dict(state, strict=True, assign=True)
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: cannot rebuild the backbone from it ({type(e).__name__}: {e})") from e
    backbone = backbone.to(device).eval()
    taps = [t.as_dict() for t in backbone.taps()]
    if _plain(taps) != _plain(meta.get("taps")):
        raise CheckpointError(f"{path}: meta 'taps' is {meta.get('taps')!r}, the rebuilt backbone has {taps!r}")
    return backbone, meta


def save_gattanet(path, model: GAttANet, backbone_path, meta_extra: dict | None = None) -> dict:
    """Save only the attention state, tied to the backbone checkpoint file it runs on; returns the meta."""
    bstate, bmeta = load_checkpoint(backbone_path, {"kind": "backbone", "arch": model.backbone.arch,
                                                    "num_classes": model.backbone.num_classes})
    own = model.backbone.state_dict()
    if list(own) != list(bstate) or not all(torch.equal(v.cpu(), bstate[k]) for k, v in own.items()):
        raise CheckpointError(f"{backbone_path}: its weights are not those of the model's backbone; "
                              "pass the backbone checkpoint the model was built from")
    att = model.attention
    meta = {"kind": "gattanet"} | AttentionSpec.of(model).meta() | {
            "taps": [t.as_dict() for t in att.taps], "arch": bmeta["arch"], "dataset": bmeta["dataset"],
            "num_classes": bmeta["num_classes"], "input_size": bmeta["input_size"],
            "backbone_sha256": sha256_file(backbone_path)} | dict(meta_extra or {})
    save_checkpoint(path, att.state_dict(), meta)
    return meta


def load_gattanet(attn_path, backbone_path, device="cpu",
                  loaded: tuple[Backbone, dict] | None = None) -> tuple[GAttANet, dict]:
    """Rebuild a GAttANet from its attention checkpoint and the backbone checkpoint it was trained on.
    `loaded`: that checkpoint already loaded, (backbone, meta), for models that share one backbone."""
    state, meta = load_checkpoint(attn_path, {"kind": "gattanet"})
    backbone, bmeta = loaded if loaded is not None else load_backbone(backbone_path, device)
    for key in ("arch", "dataset", "num_classes", "input_size"):
        if meta.get(key) != bmeta.get(key):
            raise CheckpointError(f"{attn_path}: attention was trained for {key}={meta.get(key)!r} but backbone "
                                  f"{backbone_path} has {key}={bmeta.get(key)!r}")
    if _plain(meta.get("taps")) != _plain(bmeta.get("taps")):
        raise CheckpointError(f"{attn_path}: attention taps {meta.get('taps')!r} differ from backbone "
                              f"{backbone_path} taps {bmeta.get('taps')!r}")
    sha = sha256_file(backbone_path)
    if meta.get("backbone_sha256") != sha:
        raise CheckpointError(f"{attn_path}: attention was trained on a backbone checkpoint with sha256 "
                              f"{meta.get('backbone_sha256')}, but {backbone_path} has sha256 {sha}; "
                              "retrain the attention on this backbone")
    try:
        spec = AttentionSpec.from_meta(meta)
        taps = [Tap(t["name"], t["kind"], tuple(t["shape"])) for t in meta["taps"]]
        attention = spec.attention(taps)
        attention.load_state_dict(state, strict=True)
        model = GAttANet(backbone, attention.to(device), spec.pattern, spec.iterations)
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{attn_path}: cannot rebuild the attention from it ({type(e).__name__}: {e})") from e
    return model, meta


def sha256_file(path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _plain(x):
    """Tuples as lists, recursively, so metadata compares equal however it was spelt."""
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x
