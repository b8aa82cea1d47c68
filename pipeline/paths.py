"""Where the stages read and write: the DVC outputs' folders and the file of each model and dataset."""

from __future__ import annotations

from pathlib import Path

DATA = Path("data")
BACKBONES = Path("models/backbones")
ATTENTION = Path("models/attention")
EXTENSIONS = Path("models/extensions")
RESULTS = Path("results")
REPORTS = Path("reports")
PARAMS_OK = RESULTS / "params.ok"  # the validate stage's stamp, on which every other stage depends
FIGURES = REPORTS / "figures"  # the report's figures, beside reports/index.html
RESUME = Path(".gattanet/resume")  # not a DVC output, so `dvc repro` keeps it across a kill
CACHE = Path(".gattanet/cache")  # decoded ImageNet crops (gattanet.data.decoded_cache): content-keyed, not a DVC output


def data_path(dataset: str) -> Path:
    """The materialised dataset (the manifest for ImageNet)."""
    return DATA / f"{dataset}.pt"


def backbone_path(key: str) -> Path:
    return BACKBONES / f"{key}.pt"


def attention_dir(key: str) -> Path:
    """The folder of attention run `key`'s checkpoints, one per training seed."""
    return ATTENTION / key


def attention_path(key: str, seed: int) -> Path:
    """The checkpoint of training seed `seed` of attention run `key`."""
    return attention_dir(key) / f"seed-{seed}.pt"


def extension_dir(key: str) -> Path:
    """The folder of extension `key`'s checkpoints (a variant of an attention run), one per training seed."""
    return EXTENSIONS / key


def extension_path(key: str, seed: int) -> Path:
    """The checkpoint of training seed `seed` of extension `key` (a variant of an attention run)."""
    return extension_dir(key) / f"seed-{seed}.pt"


def resume_path(stage: str, key: str, seed: int | None = None) -> Path:
    """Where the training of stage entry `stage@key` (its training seed `seed`, for a stage that trains several)
    keeps its progress; kept after a seed finishes until the stage's outputs are written, so a stage killed at
    its third seed resumes there and not at the first."""
    return RESUME / f"{stage}-{key}{'' if seed is None else f'-seed{seed}'}.pt"
