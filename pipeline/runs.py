"""A run's pieces as the stages want them: its params entry, its training seed and resume context, an
attention run's spec, one attention model trained for one seed, and an attention run's trained models
loaded onto one shared backbone."""

from __future__ import annotations

import dataclasses
import functools

from gattanet.data.augment import Augment
from gattanet.engine.checkpoint import CheckpointError, load_backbone, load_gattanet, sha256_file
from gattanet.data.noise import derive_seed
from gattanet.engine.placement import place
from gattanet.engine.resume import Resume, code_digest
from gattanet.engine.train import TrainConfig, fit
from gattanet.models.spec import AttentionSpec
from pipeline.data_source import DataSource
from pipeline.config import entry
from pipeline.paths import RESUME, attention_path, backbone_path
from pipeline.runtime import resolve_device, seeded


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


def attention_spec(run) -> AttentionSpec:
    """The model settings of attention run `run` (its training settings go to TrainConfig)."""
    return AttentionSpec(run.attn_dim, run.dropout, run.kq_norm, run.score_norm, run.iterations, run.lesion)


def resume_at(path, context: dict, keep: bool = True) -> Resume:
    """fit's resume settings: progress kept at `path` (until the stage's outputs are written, when `keep`),
    taken up again only under the same `context` (see training_context) and by the same code."""
    return Resume(path, keep=keep, context=context, code=stage_code())


@functools.cache
def stage_code() -> str:
    """sha256 of the project's modules this stage has loaded by its first training (gattanet/ and pipeline/
    .py files in sys.modules): a resume file written by other code is discarded. Taken once per process,
    at the same point of the stage whatever the resume files hold, so the same code gives the same digest."""
    return code_digest(("gattanet", "pipeline"))


def resume_file(name: str, seed: int):
    """Where training seed `seed` of `name` keeps its progress; kept when it finishes, until the stage's
    outputs are written, so a stage killed at its third seed resumes there and not at the first."""
    return RESUME / f"{name}-seed{seed}.pt"


def load_run_backbone(run, device):
    """The frozen backbone of attention run `run`, on the device; every seed is built on this one object."""
    backbone, _ = load_backbone(backbone_path(run.backbone), device=str(device),
                                expect={"kind": "backbone", "dataset": run.dataset})
    return place(backbone, device)


def train_attention(params, run, source, device, backbone, seed: int, lesion: str | None = None,
                    resume_name: str | None = None, on_epoch=None):
    """(model, TrainResult): one GAttANet of attention run `run` trained for training seed `seed` on
    `backbone` (optionally under another lesion pattern), in eval mode."""
    train_seed = training_seed(params, seed)
    seeded(train_seed)
    model = place(attention_spec(run).build(backbone, lesion), device)
    name = resume_name or f"train-attn-{run.key}"
    result = fit(model, list(model.attention_parameters()),
                 source.train_loader(run.batch_size, augment_of(run.augment), run.train_subset, train_seed),
                 source.loader("val"),
                 TrainConfig(epochs=run.epochs, patience=run.patience, lr=run.lr, l2=run.l2, seed=train_seed,
                             amp=params.amp),
                 resume=resume_at(resume_file(name, seed), training_context(params, run, source)),
                 label=f"train-attn {run.key} seed {seed}" + (f" [{lesion}]" if lesion else ""), on_epoch=on_epoch)
    model.eval()
    return model, result


def augment_of(cfg) -> Augment | None:
    """The engine's augmentation for an Augment params block (None when everything is off)."""
    if cfg.rotation == 0 and cfg.shift == 0 and not cfg.hflip:
        return None
    return Augment(rotation=cfg.rotation, shift=cfg.shift, hflip=cfg.hflip)


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
