"""What the stages share: device choice, output paths, data access and model loading for a run."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import torch

DATA = Path("data")
BACKBONES = Path("models/backbones")
ATTENTION = Path("models/attention")
RESULTS = Path("results")
REPORTS = Path("reports")
RESUME = Path(".gattanet/resume")  # not a DVC output, so `dvc repro` keeps it across a kill
EVAL_BATCH = 512  # images per batch wherever a stage only evaluates


def resolve_device(device: str) -> torch.device:
    """`auto` → CUDA when present, else CPU; an explicit CUDA device must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available; use auto or cpu")
    return torch.device(device)


def seeded(seed: int) -> None:
    """Seed torch's global generator before a model is built, so its initial weights repeat."""
    torch.manual_seed(seed)


@contextmanager
def stopwatch():
    """Yield a dict whose 'seconds' is filled in when the block ends."""
    t = {"seconds": 0.0}
    start = time.perf_counter()
    yield t
    t["seconds"] = round(time.perf_counter() - start, 3)


def data_path(dataset: str) -> Path:
    return DATA / f"{dataset}.pt"


def load_splits(params, dataset: str) -> dict:
    """train/val/test TensorData of a materialised dataset (the validation split carved from train)."""
    from gattanet.datasets import load_tensors, split_train_val

    path = data_path(dataset)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `dvc repro data@{dataset}` "
                                f"(or `gattanet-cli stage data {dataset}`) first")
    splits = load_tensors(path)
    train, val = split_train_val(splits["train"], params.data[dataset].val_fraction, params.seed)
    return {"train": train, "val": val, "test": splits["test"]}


def attention_path(key: str, seed: int) -> Path:
    """The checkpoint of training seed `seed` of attention run `key`."""
    return ATTENTION / key / f"seed-{seed}.pt"


def training_seed(params, seed: int) -> int:
    """The seed that drives one attention model's init, shuffling and dropout: the run's global
    `seed` and the model's entry in `seeds`, so a new global seed gives new models too."""
    from gattanet.noise import derive_seed

    return derive_seed(params.seed, seed)


def training_context(params, run, source) -> dict:
    """What shapes a training beyond its TrainConfig, for the resume fingerprint: the run's params, the
    data file's content hash, and the backbone checkpoint's bytes (when the run has one)."""
    import dataclasses

    from gattanet.checkpoint import sha256_file

    backbone = getattr(run, "backbone", None)
    path = BACKBONES / f"{backbone}.pt" if backbone else None
    return {"run": repr(dataclasses.asdict(run)), "data": source.digest, "seed": params.seed,
            "val_fraction": params.data[source.dataset].val_fraction,
            "backbone": sha256_file(path) if path is not None and path.exists() else None}


def load_run_models(params, key: str, device) -> dict:
    """{seed: trained GAttANet} of attention run `key`, every seed on one shared backbone (checked
    against the run's params), in eval mode on the device."""
    from gattanet.checkpoint import CheckpointError, load_backbone, load_gattanet
    from gattanet.placement import place

    run = params.attention[key]
    backbone_path = BACKBONES / f"{run.backbone}.pt"
    loaded = load_backbone(backbone_path, device=str(device))
    place(loaded[0], device)
    models = {}
    for seed in run.seeds:
        path = attention_path(key, seed)
        model, meta = load_gattanet(path, backbone_path, device=str(device), loaded=loaded)
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


def entry(section: dict, key: str, name: str):
    """params.<name>[key], or a ValueError listing the entries there are."""
    if key not in section:
        raise ValueError(f"{name}: no entry {key!r} in params; entries: {', '.join(section) or '(none)'}")
    return section[key]


def augment_of(cfg):
    """The engine's augmentation for an Augment params block (None when everything is off)."""
    from gattanet.augment import Augment

    if cfg.rotation == 0 and cfg.shift == 0 and not cfg.hflip:
        return None
    return Augment(rotation=cfg.rotation, shift=cfg.shift, hflip=cfg.hflip)


def history_rows(history: list[dict]) -> list[dict]:
    return [{c: h[c] for c in HISTORY_COLUMNS} for h in history]


HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"]


class DataSource:
    """Loaders over one dataset's train/val/test splits, on the device, as the engine wants them.

    Small sets come from data/NAME.pt as device-resident uint8 tensors; ImageNet comes from its
    folder tree (the manifest data/imagenet.pt names it) through DataLoader workers.
    """

    def __init__(self, params, dataset: str, device):
        from gattanet.specs import get_spec

        self.params, self.dataset, self.device = params, dataset, device
        self.spec = get_spec(dataset)
        if dataset == "imagenet":
            from pipeline.imagenet import folder_splits

            self.splits, self.mean, self.std = folder_splits(params, data_path(dataset))
            self.classes = tuple(self.splits["test"].classes)
        else:
            self.splits = load_splits(params, dataset)
            self.classes = tuple(self.splits["test"].classes)
            self.mean, self.std = self.splits["train"].mean, self.splits["train"].std
        self.num_classes = len(self.classes) or self.spec.num_classes
        self.topk = (1, 5) if self.num_classes >= 100 else (1,)

    @property
    def digest(self) -> str:
        """sha256 of the materialised data file (the ImageNet manifest for ImageNet)."""
        from gattanet.checkpoint import sha256_file

        return sha256_file(data_path(self.dataset))

    def _loader(self, data, batch_size: int, **kw):
        from gattanet.loader import FolderLoader, TensorLoader
        from gattanet.placement import CHANNELS_LAST

        if self.dataset == "imagenet":
            kw.pop("augment", None)  # ImageNet runs use the weights' eval transform only
            return FolderLoader(data, batch_size, mean=self.mean, std=self.std, device=self.device,
                                channels_last=CHANNELS_LAST, **kw)
        return TensorLoader(data, batch_size, device=self.device, channels_last=CHANNELS_LAST, **kw)

    def train_loader(self, batch_size: int, augment, train_subset: int = 0, seed: int | None = None):
        """Shuffled, augmented training batches; `seed` (default: the global one) drives the order."""
        data = subset(self.splits["train"], train_subset, self.params.seed)
        seed = self.params.seed if seed is None else seed
        return self._loader(data, batch_size, shuffle=True, seed=seed, augment=augment)

    def loader(self, split: str, batch_size: int, *, sigma: float = 0.0, noise_seed: int = 0,
               clip: bool = True, limit: int = 0):
        data = subset(self.splits[split], limit, self.params.seed)
        return self._loader(data, batch_size, sigma=sigma, noise_seed=noise_seed, clip=clip)

    def labels(self, split: str) -> torch.Tensor:
        data = self.splits[split]
        return data.labels if hasattr(data, "labels") else torch.as_tensor(_targets(data))

    def batch(self, split: str, indices: torch.Tensor):
        """The chosen images as one normalised batch (x, y) and as [0,1] float images (C,H,W) for figures."""
        data = subset_at(self.splits[split], indices)
        x, y = next(iter(self._loader(data, len(indices)).epoch(0)))
        if hasattr(data, "images"):
            raw = data.images.float() / 255
        else:
            raw = torch.stack([data[i][0] for i in range(len(indices))])
        return x, y, raw


def subset_at(data, indices: torch.Tensor):
    if hasattr(data, "subset"):
        return data.subset(indices)
    from torch.utils.data import Subset

    return Subset(data, indices.tolist())


def _targets(data) -> list[int]:
    """Labels of an ImageFolder or a Subset of one, without decoding images."""
    from torch.utils.data import Subset

    if isinstance(data, Subset):
        t = _targets(data.dataset)
        return [t[i] for i in data.indices]
    return list(data.targets)


def subset(data, n: int, seed: int):
    """The first n of a seeded permutation (n = 0: everything); TensorData or a map-style Dataset."""
    if n <= 0 or n >= len(data):
        return data
    g = torch.Generator().manual_seed(seed)
    return subset_at(data, torch.randperm(len(data), generator=g)[:n])
