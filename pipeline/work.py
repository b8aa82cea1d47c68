"""What the stages' `work(params, key)` count their work with: the datasets' split sizes as the stages
split them, subsets, the earliest an early-stopped training ends, and the cost model's `ModelSpec` of a run.

Each stage module in pipeline/stages/ has a `work(params, key)` beside its `run`, returning its
`gattanet.cost.rates.Work` items (images × one kind of pass), counted from the settings and constants its
`run` uses; `gattanet-cli plan` (pipeline/plan.py) assembles them and times them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gattanet.cost.rates import ModelSpec, Work
from gattanet.models.spec import AttentionSpec
from gattanet.data.specs import get_spec
from pipeline.paths import data_path

# The datasets' standard (official) split sizes: train, test. ImageNet-1k (ILSVRC2012): train and val.
STANDARD_SIZES = {"fashion-mnist": (60_000, 10_000), "fashion-clutter": (60_000, 10_000), "cifar10": (50_000, 10_000),
                  "cifar100": (50_000, 10_000), "imagenet": (1_281_167, 50_000)}

__all__ = ["STANDARD_SIZES", "Sizes", "Work", "dataset_sizes", "least", "model_spec", "no_model", "num",
           "seeds_text", "subset"]


@dataclass(frozen=True)
class Sizes:
    train: int  # after the validation split is carved out
    val: int
    test: int
    source: str


_COUNTS: dict[tuple, tuple[tuple[int, int] | None, str]] = {}  # (path, mtime, size) -> counts, source


def _counts(name: str) -> tuple[tuple[int, int] | None, str]:
    """(train, test) counts of data/NAME.pt when it is materialised (read once per file version)."""
    path = data_path(name)
    if not path.is_file():
        return None, f"standard sizes of {name}"
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _COUNTS:
        try:
            d = torch.load(path, map_location="cpu", weights_only=True, mmap=name != "imagenet")
            counts = ((len(d["files"]["train"]), len(d["files"]["val"])) if name == "imagenet" else
                      (int(d["train"]["labels"].numel()), int(d["test"]["labels"].numel())))
            _COUNTS[key] = counts, str(path)
        except Exception as e:  # an unreadable file stops the pipeline at its data stage; plan on
            _COUNTS[key] = None, f"standard sizes of {name} ({path} unreadable: {type(e).__name__})"
    return _COUNTS[key]


def dataset_sizes(params, name: str) -> Sizes:
    """Train/val/test sizes of a dataset as the stages split it (see DataSource and folder_splits); from
    data/NAME.pt when it is materialised, else from the dataset's standard sizes."""
    counts, source = _counts(name)
    n, test = counts or STANDARD_SIZES[name]
    fraction = params.data[name].val_fraction
    val = max(1, int(n * fraction)) if name == "imagenet" else round(n * fraction)  # as the stages split
    return Sizes(n - val, val, test, source)


def least(epochs: int, patience: int) -> float:
    """The share of its epoch limit a training runs at the least: early stopping ends it after `patience`
    epochs without a better validation accuracy, so after 1 + patience epochs at the earliest."""
    return min(epochs, 1 + patience) / epochs


def subset_size(n: int, k: int) -> int:
    """Images a `limit`/`train_subset` of k leaves of n (0 = all)."""
    return n if k <= 0 or k >= n else k


def num(x: int) -> str:
    return f"{x:,}"


def seeds_text(k: int) -> str:
    return f"{k} seed{'s' if k != 1 else ''}"


def model_spec(dataset: str, arch: str, kind: str = "backbone", run=None) -> ModelSpec:
    """The cost model's description of a backbone (or of a GAttANet/adapter of attention run `run`)."""
    spec = get_spec(dataset)
    attn = None if run is None else AttentionSpec.from_settings(run)
    return ModelSpec(arch, spec.channels, spec.size, spec.num_classes, kind, attn)


def no_model(stage: str, key: str | None, what: str) -> list[Work]:
    """A stage entry that passes no image through a model."""
    return [Work(stage, key, what, 0)]
