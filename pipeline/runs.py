"""A run's pieces as the stages want them: its resume context, one attention model trained for one seed (its
parameter groups when the backbone is fine-tuned, or the fine-tuning control without attention), its checkpoint,
and an attention run's trained models loaded (onto one shared backbone, or each on its own fine-tuned one)."""

from __future__ import annotations

import copy
import dataclasses
import functools
from pathlib import Path

from gattanet.data.augment import Augment
from gattanet.engine.checkpoint import (CheckpointError, load_backbone, load_checkpoint, load_gattanet, save_backbone,
                                        save_checkpoint, save_gattanet, sha256_file)
from gattanet.data.noise import derive_seed
from gattanet.engine.placement import place
from gattanet.engine.resume import Resume, code_digest
from gattanet.engine.train import TrainConfig, fit
from gattanet.models.spec import AttentionSpec
from pipeline.data_source import DataSource
from pipeline.config import entry
from pipeline.paths import attention_path, backbone_path
from pipeline.runtime import resolve_device, seeded

FINETUNED = "gattanet-finetuned"  # meta kind of a fine-tuned GAttANet's checkpoint: attention and backbone weights


def training_context(run, source: DataSource) -> dict:
    """What shapes a training beyond its TrainConfig, for the resume fingerprint: the run's params, what shapes
    the data's splits (DataSource.fingerprint), and the backbone checkpoint's bytes (when the run has one)."""
    backbone = getattr(run, "backbone", None)
    path = backbone_path(backbone) if backbone else None
    return {"run": repr(dataclasses.asdict(run)), **source.fingerprint,
            "backbone": sha256_file(path) if path is not None and path.exists() else None}


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


def load_run_backbone(run, device):
    """The frozen backbone of attention run `run`, on the device; every seed is built on this one object."""
    backbone, meta = load_backbone(backbone_path(run.backbone), device=str(device),
                                   expect={"kind": "backbone", "dataset": run.dataset})
    check_backbone_fits(backbone_path(run.backbone), meta, run.dataset)
    return place(backbone, device)


def check_backbone_fits(path, meta: dict, dataset: str) -> None:
    """A backbone checkpoint is built for its dataset's classes, channels and image size (the data file was
    checked against the same facts): a 20-class backbone on 10-class data is refused before it trains or scores."""
    from gattanet.data.specs import get_spec
    from pipeline.paths import data_path

    spec = get_spec(dataset)
    for key, name, want in (("num_classes", "classes", spec.num_classes), ("in_channels", "channels", spec.channels),
                            ("input_size", "pixels a side", spec.size)):
        if meta.get(key) != want:
            raise CheckpointError(f"{path}: a backbone of {meta.get(key)} {name}, but {data_path(dataset)} has {want}; "
                                  f"retrain it: `dvc repro pretrain@{Path(path).stem}`")


def train_attention(run, source, device, backbone, seed: int, *, global_seed: int, amp: bool, resume: Path,
                    lesion: str | None = None, on_epoch=None, stage: str = "train-attn"):
    """(model, TrainResult): one GAttANet of attention run `run` trained for training seed `seed` on
    `backbone` (optionally under another lesion pattern), in eval mode. A fine-tuning run trains its own copy
    of `backbone` with it; its control (`attention: false`) trains that copy alone, and returns it.
    Its init, shuffling and dropout follow derive_seed(`global_seed`, `seed`) (params `seed` and the run's
    entry in `seeds`: a new global seed gives new models too); `amp`: params `amp`; its progress is kept at
    `resume` (see resume_at); `stage` names the calling stage in the training log."""
    train_seed = derive_seed(global_seed, seed)
    seeded(train_seed)
    model, groups = trained_model(run, copy.deepcopy(backbone) if run.finetune else backbone, lesion)
    model = place(model, device)
    result = fit(model, groups,
                 source.train_loader(run.batch_size, augment_of(run.augment), run.train_subset, train_seed),
                 source.loader("val"),
                 TrainConfig(epochs=run.epochs, patience=run.patience, lr=run.lr if run.attention else run.finetune_lr,
                             l2=run.l2, seed=train_seed, amp=amp),
                 resume=resume_at(resume, training_context(run, source)),
                 label=f"{stage} {run.key} seed {seed}" + (f" [{lesion}]" if lesion else ""), on_epoch=on_epoch)
    model.eval()
    return model, result


def trained_model(run, backbone, lesion: str | None = None):
    """(model, what fit trains) of attention run `run` on `backbone`: the GAttANet and its attention
    parameters (the paper); with `finetune`, two parameter groups, the attention's at `lr` and the backbone's
    at `finetune_lr`, the L2 penalty on the attention's weights only (the backbone was pretrained without);
    with `attention: false` (the fine-tuning control), the backbone alone, at `finetune_lr` (fit's lr), no L2."""
    if not run.attention:
        return backbone, [{"params": list(backbone.parameters()), "l2": False}]
    model = AttentionSpec.from_settings(run).build(backbone, lesion)
    if not run.finetune:
        return model, list(model.attention_parameters())
    return model, [{"params": model.attention_parameters()},
                   {"params": model.backbone_parameters(), "lr": run.finetune_lr, "l2": False}]


def save_run_model(path, run, model, backbone_file, meta_extra: dict) -> dict:
    """Write one trained model of attention run `run` to `path`; returns its meta. The paper's GAttANet: its
    attention state alone, tied to `backbone_file` (gattanet.engine.checkpoint.save_gattanet); a fine-tuned
    one (kind FINETUNED): the attention's and the backbone's weights (`model.state_dict()`), with the sha256
    of the backbone checkpoint it started from; the fine-tuning control: a backbone checkpoint (kind
    "backbone", loadable as any) whose meta names the one it started from (`finetuned_from`)."""
    if run.attention and not run.finetune:
        return save_gattanet(path, model, backbone_file, meta_extra)
    _, bmeta = load_checkpoint(backbone_file, {"kind": "backbone"})
    started = {"finetuned_from": sha256_file(backbone_file)}
    if not run.attention:
        return save_backbone(path, model, bmeta["dataset"], bmeta["classes"], started | dict(meta_extra))
    meta = {"kind": FINETUNED} | AttentionSpec.of(model).meta() | {
        "taps": [t.as_dict() for t in model.attention.taps], "arch": bmeta["arch"], "dataset": bmeta["dataset"],
        "num_classes": bmeta["num_classes"], "input_size": bmeta["input_size"],
        "backbone_sha256": started["finetuned_from"]} | dict(meta_extra)
    save_checkpoint(path, model.state_dict(), meta)
    return meta


def load_run_model(path, run, backbone_file, device, loaded):
    """(model, meta) that `save_run_model` wrote for attention run `run`; `loaded`: (backbone, meta) of
    `backbone_file`, the one the paper's GAttANets share (a fine-tuned model gets its own copy)."""
    if run.attention and not run.finetune:
        return load_gattanet(path, backbone_file, device=str(device), loaded=loaded)
    sha = sha256_file(backbone_file)
    if not run.attention:
        model, meta = load_backbone(path, device=str(device), expect={"finetuned_from": sha})
        return model, meta
    state, meta = load_checkpoint(path, {"kind": FINETUNED, "backbone_sha256": sha})
    try:
        model = AttentionSpec.from_meta(meta).build(copy.deepcopy(loaded[0]))
        model.load_state_dict(state, strict=True)
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: cannot rebuild the fine-tuned GAttANet from it ({type(e).__name__}: {e})") from e
    return model, meta


def augment_of(cfg) -> Augment | None:
    """The engine's augmentation for an Augment params block (None when everything is off)."""
    if cfg.rotation == 0 and cfg.shift == 0 and not cfg.hflip:
        return None
    return Augment(rotation=cfg.rotation, shift=cfg.shift, hflip=cfg.hflip)


def load_run_models(params, key: str, device) -> dict:
    """{seed: trained model} of attention run `key` (a GAttANet, every seed on one shared backbone, unless
    fine-tuned: each on its own; the backbone itself for the fine-tuning control), checked against the run's
    params, in eval mode on the device."""
    run = params.attention[key]
    backbone = backbone_path(run.backbone)
    loaded = load_backbone(backbone, device=str(device))
    check_backbone_fits(backbone, loaded[1], run.dataset)
    place(loaded[0], device)
    models = {}
    checked = (("dataset", "dataset"), ("backbone_run", "backbone")) + ((("attn_dim", "attn_dim"),) if run.attention else ())
    for seed in run.seeds:
        path = attention_path(key, seed)
        model, meta = load_run_model(path, run, backbone, device, loaded)
        for meta_key, param in checked:
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
