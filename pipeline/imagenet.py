"""ImageNet as an ImageFolder tree: a manifest (data/imagenet.pt) for DVC, and the train/val/test splits."""

from __future__ import annotations

from pathlib import Path

import torch

from gattanet.data.datasets import DatasetError, imagenet_split, transform_from_weights
from gattanet.io import atomic_path


def write_manifest(root: str, path: Path) -> None:
    """Record the tree's classes and image lists, so DVC notices when the data change."""
    splits = {s: imagenet_split(root, s, None) for s in ("train", "val")}
    manifest = {"kind": "imagenet-folder", "root": str(Path(root).resolve()),
                "classes": list(splits["train"].classes),
                "files": {s: [str(Path(p).relative_to(Path(root) / s)) for p, _ in d.samples]
                          for s, d in splits.items()}}
    if splits["val"].classes != splits["train"].classes:
        raise DatasetError(f"{root}: train/ and val/ have different class folders")
    with atomic_path(path) as tmp:
        torch.save(manifest, tmp)
    print(f"imagenet: {len(manifest['files']['train'])} train, {len(manifest['files']['val'])} val images "
          f"in {len(manifest['classes'])} classes -> {path}")


def folder_splits(params, manifest_path: Path):
    """train/val (carved from train by seed) and test (= the official val) ImageFolders, with mean/std."""
    from torch.utils.data import Subset
    from torchvision.models import ResNet18_Weights

    if not manifest_path.exists():
        raise FileNotFoundError(f"{manifest_path} is missing: run `dvc repro data@imagenet` first")
    manifest = torch.load(manifest_path, weights_only=True)
    transform, mean, std = transform_from_weights(ResNet18_Weights.IMAGENET1K_V1)  # = ResNet50 V1's
    train = imagenet_split(manifest["root"], "train", transform)
    test = imagenet_split(manifest["root"], "val", transform)
    n_val = max(1, int(len(train) * params.data["imagenet"].val_fraction))
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(params.seed)).tolist()
    return {"train": Subset(train, perm[n_val:]), "val": Subset(train, perm[:n_val]), "test": test}, mean, std
