"""A run's pieces as the stages want them: its params entry, its training seed and resume context,
and an attention run's trained models loaded onto one shared backbone."""

from __future__ import annotations

import dataclasses

from gattanet.data.augment import Augment
from gattanet.engine.checkpoint import CheckpointError, load_backbone, load_gattanet, sha256_file
from gattanet.data.noise import derive_seed
from gattanet.engine.placement import place
from pipeline.data_source import DataSource
from pipeline.config import entry
from pipeline.paths import attention_path, backbone_path
from pipeline.runtime import resolve_device

HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"]


def training_seed(params, seed: int) -> int:
    """The seed that drives one attention model's init, shuffling and dropout: the run's global
    `seed` and the model's entry in `seeds`, so a new global seed gives new models too."""
    return derive_seed(params.seed, seed)


def training_context(params, run, source: DataSource) -> dict:
    """What shapes a training beyond its TrainConfig, for the resume fingerprint: the run's params, the
    data file's content hash, and the backbone checkpoint's bytes (when the run has one)."""
    backbone = getattr(run, "backbone", None)
    path = backbone_path(backbone) if backbone else None
    return {"run": repr(dataclasses.asdict(run)), "data": source.digest, "seed": params.seed,
            "val_fraction": params.data[source.dataset].val_fraction,
            "backbone": sha256_file(path) if path is not None and path.exists() else None}


def augment_of(cfg) -> Augment | None:
    """The engine's augmentation for an Augment params block (None when everything is off)."""
    if cfg.rotation == 0 and cfg.shift == 0 and not cfg.hflip:
        return None
    return Augment(rotation=cfg.rotation, shift=cfg.shift, hflip=cfg.hflip)


def history_rows(history: list[dict]) -> list[dict]:
    return [{c: h[c] for c in HISTORY_COLUMNS} for h in history]


def load_run_models(params, key: str, device) -> dict:
    """{seed: trained GAttANet} of attention run `key`, every seed on one shared backbone (checked
    against the run's params), in eval mode on the device."""
    run = params.attention[key]
    backbone = backbone_path(run.backbone)
    loaded = load_backbone(backbone, device=str(device))
    place(loaded[0], device)
    models = {}
    for seed in run.seeds:
        path = attention_path(key, seed)
        model, meta = load_gattanet(path, backbone, device=str(device), loaded=loaded)
        for meta_key, param in (("dataset", "dataset"), ("backbone_run", "backbone"), ("attn_dim", "attn_dim")):
            if meta.get(meta_key) != getattr(run, param):
                raise CheckpointError(f"{path} was trained with {param} {meta.get(meta_key)!r}, but "
                                      f"attention.{key}.{param} is {getattr(run, param)!r}: "
                                      f"rerun `dvc repro train-attn@{key}`")
        models[seed] = place(model, device).eval()
    return models


def open_run(params, key: str):
    """What an analysis stage of attention run `key` needs: its params, the device, its data, its
    models ({seed: GAttANet} on one backbone)."""
    run = entry(params.attention, key, "attention")
    device = resolve_device(params.device)
    source = DataSource(params, run.dataset, device)
    return run, device, source, load_run_models(params, key, device)
