"""Loaders with one protocol: `num_samples`, `len()` (batches per epoch) and `epoch(e)` ->
(x, y) batches on the device, x normalised. Shuffling, augmentation and noise depend only on
the seeds and the epoch number, so an epoch is the same whether or not a run was resumed."""

from __future__ import annotations

from typing import Iterator, Protocol, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from gattanet.data.augment import Augment
from gattanet.data.datasets import TensorData
from gattanet.world import SINGLE, World
from gattanet.data.noise import add_noise, derive_seed, indexed_noise


class Loader(Protocol):
    num_samples: int

    def __len__(self) -> int: ...

    def epoch(self, e: int) -> Iterator[tuple[Tensor, Tensor]]: ...


class Finish:
    """What every loader does last, on the device, to a batch of [0,1] images: seeded Gaussian noise of std
    `sigma` per image index (see `indexed_noise`), clip to [0,1] (`clip`), normalise by `mean`/`std`, and
    the memory format (`channels_last`). A loader is given one; the batches land on its `device`."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, sigma: float = 0.0, noise_seed: int = 0,
                 clip: bool = True, device: torch.device | str = "cpu", channels_last: bool = False) -> None:
        if not sigma >= 0:
            raise ValueError(f"noise sigma must be >= 0, got {sigma}")
        device = torch.device(device)
        shape = (1, len(mean), 1, 1)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(shape)
        self.inv_std = 1 / torch.tensor(std, dtype=torch.float32, device=device).view(shape)
        self.sigma, self.noise_seed, self.clip = float(sigma), int(noise_seed), clip
        self.device, self.channels_last = device, channels_last

    def __call__(self, x01: Tensor, indices: Tensor) -> Tensor:
        if self.sigma > 0:
            noise = indexed_noise(indices, tuple(x01.shape[1:]), self.noise_seed, self.device)
            x01 = add_noise(x01, self.sigma, noise, clip=self.clip)
        x = (x01 - self.mean).mul_(self.inv_std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def _check_batch_size(batch_size: int) -> None:
    if not (isinstance(batch_size, int) and batch_size > 0):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def _check_world(num_samples: int, batch_size: int, world: World) -> None:
    """Every rank must get at least one image of every global batch (each takes the same steps)."""
    last = num_samples % batch_size or batch_size
    if world.size > 1 and min(batch_size, last) < world.size:
        raise ValueError(f"a batch of {min(batch_size, last)} images (the last of {num_samples} in batches of "
                         f"{batch_size}) cannot be shared by {world.size} processes; change the batch size, "
                         f"the subset or the number of processes")


class TensorLoader:
    """Batches of a `TensorData` held whole on `finish.device` as uint8. Per batch: /255 -> augmentation ->
    `finish` (noise, clip, normalise; default: the data's mean/std on the CPU, no noise).
    With a `world` of several processes, each yields its share of every global batch (see
    gattanet.engine.distributed): the whole batch is augmented on every rank, so the draws match one process."""

    def __init__(self, data: TensorData, batch_size: int, finish: Finish | None = None, *, shuffle: bool = False,
                 seed: int = 0, augment: Augment | None = None, world: World = SINGLE) -> None:
        _check_batch_size(batch_size)
        _check_world(len(data), batch_size, world)
        self.world = world
        self.finish = finish if finish is not None else Finish(data.mean, data.std)
        self.device = self.finish.device
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.num_samples = len(data)
        self.batch_size, self.shuffle, self.seed, self.augment = batch_size, shuffle, seed, augment

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def epoch(self, e: int) -> Iterator[tuple[Tensor, Tensor]]:
        gen = torch.Generator().manual_seed(derive_seed(self.seed, e))
        order = torch.randperm(self.num_samples, generator=gen) if self.shuffle \
            else torch.arange(self.num_samples)
        device_order = order.to(self.device)
        for start in range(0, self.num_samples, self.batch_size):
            idx = device_order[start:start + self.batch_size]
            x = self.images[idx].float().div_(255)
            if self.augment is not None:
                x = self.augment(x, gen)
            indices, y = order[start:start + self.batch_size], self.labels[idx]
            if self.world.size > 1:
                part = self.world.share(len(idx))
                x, indices, y = x[part], indices[part], y[part]
            yield self.finish(x, indices), y


class _Indexed(Dataset):
    """Wraps a dataset so each item also carries its index (for per-image noise)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        x, y = self.dataset[i]
        return x, y, i


class _EpochBatches(Sampler[list[int]]):
    """Batches of indices in order, or permuted by a generator seeded by (seed, epoch); with several
    processes, this rank's share of each global batch."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int, world: World) -> None:
        self.n, self.batch_size, self.shuffle, self.seed, self.world, self.epoch = n, batch_size, shuffle, seed, world, 0

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self):
        if self.shuffle:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=gen).tolist()
        else:
            order = list(range(self.n))
        for start in range(0, self.n, self.batch_size):
            batch = order[start:start + self.batch_size]
            yield batch[self.world.share(len(batch))]


class FolderLoader:
    """Batches of an image-folder dataset yielding [0,1] tensors (its transform without
    normalisation), decoded by `workers` DataLoader workers; `finish` (noise, normalisation) runs on its device."""

    def __init__(self, dataset: Dataset, batch_size: int, finish: Finish, *, shuffle: bool = False, seed: int = 0,
                 workers: int = 4, world: World = SINGLE) -> None:
        _check_batch_size(batch_size)
        _check_world(len(dataset), batch_size, world)
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.finish, self.device, self.world = finish, finish.device, world
        self.num_samples, self.batch_size, self.shuffle, self.seed = len(dataset), batch_size, shuffle, seed
        self.sampler = _EpochBatches(len(dataset), batch_size, shuffle, seed, world)
        self.loader = DataLoader(_Indexed(dataset), batch_sampler=self.sampler,
                                 num_workers=workers, pin_memory=self.device.type == "cuda",
                                 persistent_workers=workers > 0)

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def epoch(self, e: int) -> Iterator[tuple[Tensor, Tensor]]:
        self.sampler.epoch = e  # read when the DataLoader iterator starts, in this process
        for x, y, idx in self.loader:
            x = x.to(self.device, non_blocking=True)
            yield self.finish(x, idx), y.to(self.device, non_blocking=True)
