"""A dataset's splits as the stages read them: loaders on the device for training and evaluation."""

from __future__ import annotations

import torch
from torch.utils.data import Subset

from gattanet.engine import distributed
from gattanet.engine.checkpoint import sha256_file
from gattanet.data.datasets import DatasetError, load_tensors, split_train_val
from gattanet.data.loader import Finish, FolderLoader, TensorLoader
from gattanet.engine.placement import CHANNELS_LAST
from gattanet.data.specs import get_spec
from pipeline.errors import MissingInputError
from pipeline.paths import data_path


def load_splits(params, dataset: str) -> dict:
    """train/val/test TensorData of a materialised dataset (the validation split carved from train)."""
    path = data_path(dataset)
    if not path.exists():
        raise MissingInputError(f"{path} is missing: run `dvc repro data@{dataset}` "
                                f"(or `gattanet-cli stage data {dataset}`) first")
    hint = (f"restore it with `dvc checkout --force {path}`; if that fails (not in the DVC cache), rerun "
            f"`dvc repro data@{dataset}`")
    splits = load_tensors(path, hint=hint)
    check_fits(path, splits, get_spec(dataset), hint)
    train, val = split_train_val(splits["train"], params.data[dataset].val_fraction, params.seed)
    return {"train": train, "val": val, "test": splits["test"]}


def check_fits(path, splits: dict, spec, hint: str) -> None:
    """The materialised images and classes are the dataset's (what its models are built for): a data file of
    another size or class count would fail deep in a model, or be scored against the wrong classes."""
    want = (spec.channels, spec.size, spec.size)
    for name in ("train", "test"):
        shape = tuple(splits[name].images.shape[1:])
        if shape != want:
            raise DatasetError(f"{path}: {name} images are {'×'.join(map(str, shape))}, {spec.name}'s models take "
                               f"{'×'.join(map(str, want))}; {hint}")
    if len(splits["test"].classes) != spec.num_classes:
        raise DatasetError(f"{path}: {len(splits['test'].classes)} classes, {spec.name} has {spec.num_classes}; {hint}")


class DataSource:
    """Loaders over one dataset's train/val/test splits, on the device, as the engine wants them.

    Small sets come from data/NAME.pt as device-resident uint8 tensors; ImageNet comes from its
    folder tree (the manifest data/imagenet.pt names it) through `data.imagenet.workers` DataLoader
    workers, its val/test splits (never training) from the decoded-crop cache when `eval_cache` is on.
    """

    def __init__(self, params, dataset: str, device):
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
        self._caches: dict = {}  # id(image folder) -> its DecodedCache (ImageNet evaluation)
        self.topk = (1, 5) if self.num_classes >= 100 else (1,)

    @property
    def digest(self) -> str:
        """sha256 of the materialised data file (the ImageNet manifest for ImageNet)."""
        return sha256_file(data_path(self.dataset))

    @property
    def fingerprint(self) -> dict:
        """What shapes its splits, for a resume fingerprint: the data file's hash, and the seed and fraction that
        carve the validation split from train."""
        return {"data": self.digest, "seed": self.params.seed,
                "val_fraction": self.params.data[self.dataset].val_fraction}

    def _finish(self, data, sigma: float = 0.0, noise_seed: int = 0, clip: bool = True) -> Finish:
        """The loaders' last step: noise, clip, normalisation by the training images' statistics (a TensorData
        carries them), on the device."""
        mean, std = (data.mean, data.std) if hasattr(data, "mean") else (self.mean, self.std)
        return Finish(mean, std, sigma=sigma, noise_seed=noise_seed, clip=clip, device=self.device,
                      channels_last=CHANNELS_LAST)

    def _loader(self, data, batch_size: int, *, sigma: float = 0.0, noise_seed: int = 0, clip: bool = True, **kw):
        finish = self._finish(data, sigma, noise_seed, clip)
        if self.dataset == "imagenet":
            kw.pop("augment", None)  # ImageNet runs use the weights' eval transform only
            return FolderLoader(data, batch_size, finish, workers=self.params.data[self.dataset].workers, **kw)
        return TensorLoader(data, batch_size, finish, **kw)

    def train_loader(self, batch_size: int, augment, train_subset: int = 0, seed: int | None = None):
        """Shuffled, augmented training batches; `seed` (default: the global one) drives the order. Under
        torchrun, this process's share of every global batch of `batch_size` (see gattanet.engine.distributed)."""
        data = seeded_subset(self.splits["train"], train_subset, self.params.seed)
        seed = self.params.seed if seed is None else seed
        return self._loader(data, batch_size, shuffle=True, seed=seed, augment=augment, world=distributed.current())

    def loader(self, split: str, batch_size: int | None = None, *, sigma: float = 0.0, noise_seed: int = 0,
               clip: bool = True, limit: int = 0):
        """Batches of one split in order (`batch_size` default: params `eval_batch_size`), optionally
        with seeded Gaussian noise of std `sigma` and only the first `limit` of a seeded permutation."""
        data = seeded_subset(self.splits[split], limit, self.params.seed)
        return self._eval_loader(data, batch_size or self.params.eval_batch_size, sigma=sigma, noise_seed=noise_seed,
                                 clip=clip)

    def noisy_test(self, noise, limit: int):
        """σ -> the test loader of a noise sweep (params block `noise`: its batch size and clipping; the draws
        seeded by the global seed), over the first `limit` test images: every stage that sweeps σ sees the same
        noisy images."""
        def loader_at(sigma: float):
            return self.loader("test", noise.batch_size, sigma=sigma, noise_seed=self.params.seed, clip=noise.clip,
                               limit=limit)
        return loader_at

    def _eval_loader(self, data, batch_size: int, *, sigma: float = 0.0, noise_seed: int = 0, clip: bool = True):
        """`_loader`'s batches, read for an image folder with `eval_cache` on from its decoded crops (see
        gattanet.data.decoded_cache: each JPEG is decoded once, then every σ, seed and stage reads uint8 shards).

        The cache lives in `cache_dir` (default .gattanet/cache, beside the resume files), not in a DVC
        output: its content is a function of the manifest's files and the transform, which its key
        digests, so DVC has nothing to track; as an output of data@imagenet it would decode every val/test
        crop up front (11 GB) whether or not a run asks for them, and DVC would hash and copy them."""
        cfg = self.params.data[self.dataset]
        if self.dataset != "imagenet" or not cfg.eval_cache:
            return self._loader(data, batch_size, sigma=sigma, noise_seed=noise_seed, clip=clip)
        from gattanet.data.decoded_cache import CachedLoader, DecodedCache, folder_and_indices

        folder, indices = folder_and_indices(data)
        if id(folder) not in self._caches:
            self._caches[id(folder)] = DecodedCache(
                folder, cfg.cache_dir, workers=cfg.workers,
                hint=f"point data.{self.dataset}.cache_dir at a disk with room, or set "
                     f"data.{self.dataset}.eval_cache: false to decode the JPEGs on every pass")
        return CachedLoader(self._caches[id(folder)].images(indices), batch_size,
                            self._finish(data, sigma, noise_seed, clip), workers=cfg.workers)

    def labels(self, split: str) -> torch.Tensor:
        data = self.splits[split]
        return data.labels if hasattr(data, "labels") else torch.as_tensor(_targets(data))

    def batch(self, split: str, indices: torch.Tensor):
        """The chosen images as one normalised batch (x, y) and as [0,1] float images (C,H,W) for figures."""
        data = subset_at(self.splits[split], indices)
        x, y = next(iter(self._eval_loader(data, len(indices)).epoch(0)))
        if hasattr(data, "images"):
            raw = data.images.float() / 255
        else:
            raw = torch.stack([data[i][0] for i in range(len(indices))])
        return x, y, raw


def subset_at(data, indices: torch.Tensor):
    if hasattr(data, "subset"):
        return data.subset(indices)
    return Subset(data, indices.tolist())


def _targets(data) -> list[int]:
    """Labels of an ImageFolder or a Subset of one, without decoding images."""
    if isinstance(data, Subset):
        t = _targets(data.dataset)
        return [t[i] for i in data.indices]
    return list(data.targets)


def seeded_subset(data, n: int, seed: int):
    """The first n of a seeded permutation (n = 0: everything); TensorData or a map-style Dataset."""
    if n <= 0 or n >= len(data):
        return data
    g = torch.Generator().manual_seed(seed)
    return subset_at(data, torch.randperm(len(data), generator=g)[:n])
