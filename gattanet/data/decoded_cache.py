"""Decoded evaluation crops, cached once: an image-folder dataset's [0,1] crops as uint8 shards on disk,
read back memory-mapped, so a noise sweep (one pass per σ and seed) or a lesion study decodes each
JPEG once instead of once per pass.

What the cache holds, and why. A cache belongs to one image folder (one ImageFolder: its root, its
file list and labels, its transform, the PIL and torchvision versions that decode and resize) and is
found under `root/<key>/`, `key` a digest of that identity, so a changed file list, transform or
decoder never reads another's crops. Inside, it holds *the images asked for so far*, not the whole
split: `images(indices)` decodes only the requested indices it does not hold yet (sorted, in shards
of `shard_size`) and returns a view in the requested order. A seeded test subset thus costs its own
size on disk; the stages of one pipeline ask for prefixes of one seeded permutation, so what they
share is decoded once and the cache ends at the largest subset asked (the whole split at most:
50,000 × 3 × 224 × 224 bytes ≈ 7.5 GB for ImageNet's validation set). The caller picks `root`; since
the key says what a folder holds, the cache can live outside any tracked output, be shared by every
run on the machine, and be deleted at any time (it is rebuilt on demand).

Each shard is a `.npy` of uint8 (n, C, H, W) and a JSON marker (its dataset indices, labels, each
file's size and mtime, the largest quantisation error): both are written to a temporary file and
renamed, the marker last, so a killed build leaves whole shards only and the next call decodes what
is still missing. A file whose size or mtime changed since its shard was written voids that shard.
Processes that share a cache (the ranks of a torchrun job, DVC queue workers) decode in turn: one that
finds images missing takes an exclusive lock on `root/<key>/.lock` (flock: local filesystems), looks
again and decodes only what the others have not; a process that finds everything cached takes no lock,
so a complete cache can be read from a read-only folder.

Quantisation: each crop x in [0,1] is stored as round(255 x) and read back as that / 255. For PIL
images (ImageFolder's loader) torchvision's Resize and CenterCrop return uint8 images and ToTensor
divides by 255, so the round trip is exact (max error 0, bit-identical floats); a transform that
produced other values would be off by at most 0.5/255, and each shard records its measured maximum.

`CachedLoader` batches a view with the protocol of gattanet.data.loader (`num_samples`, `len()`,
`epoch(e)` -> (x, y) on the device): uint8 batches go to the device, become [0,1] floats there, then
noise (per image position, as `FolderLoader` draws it), clip and normalise (`Finish`), so its batches
equal FolderLoader's over the same images.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from gattanet.world import SINGLE
from gattanet.errors import InputError
from gattanet.io import atomic_path, write_json
from gattanet.data.loader import Finish, _EpochBatches, _check_batch_size

CACHE_FORMAT = "gattanet-decoded-cache"
CACHE_VERSION = 1
SHARD_SIZE = 1024  # images per shard: 154 MB of 3×224×224 crops
_DECODE_BATCH = 32


class CacheError(InputError):
    """The cache cannot be built where it is asked for (no space, an unreadable folder)."""


# ---------------------------------------------------------------- identity


def folder_and_indices(data: Dataset) -> tuple[Dataset, np.ndarray]:
    """The image folder under `data` (itself or a chain of Subsets of it) and the folder indices of
    `data`'s items, in order."""
    indices = np.arange(len(data), dtype=np.int64)
    while isinstance(data, Subset):
        indices = np.asarray(data.indices, dtype=np.int64)[indices]
        data = data.dataset
    if not hasattr(data, "samples"):
        raise TypeError(f"the decoded cache reads image folders (with .samples), got {type(data).__name__}")
    return data, indices


def folder_identity(folder) -> dict:
    """What determines a folder's decoded crops: its root, files and labels, transform and decoders."""
    import PIL
    import torchvision

    transform = repr(folder.transform)
    if " at 0x" in transform:
        raise ValueError(f"the transform's repr names an object address, so it cannot key a cache: {transform}")
    root = os.path.abspath(folder.root)
    prefix = str(folder.root).rstrip(os.sep) + os.sep  # ImageFolder joins root/class/file: a prefix cut is enough

    def relative(path: str) -> str:  # cheap: the train folder lists 1.28M files
        return path[len(prefix):] if path.startswith(prefix) else os.path.relpath(path, root)

    files = hashlib.sha256("".join(f"{relative(p)}\t{y}\n" for p, y in folder.samples).encode())
    return {"format": CACHE_FORMAT, "version": CACHE_VERSION, "root": root, "classes": len(folder.classes),
            "images": len(folder.samples), "files_sha256": files.hexdigest(), "transform": transform,
            "pillow": PIL.__version__, "torchvision": torchvision.__version__}


def identity_key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def _stamp(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


# ---------------------------------------------------------------- the cache


class _Quantised(Dataset):
    """Items of a [0,1]-crop dataset as (uint8 crop, label, max |x - q/255|), computed in the worker."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        x, y = self.dataset[int(self.indices[i])]
        if not (isinstance(x, Tensor) and x.is_floating_point()):
            raise TypeError(f"the decoded cache stores [0,1] float crops, got {type(x).__name__}")
        if x.numel() and not (x.min() >= 0 and x.max() <= 1):
            raise ValueError(f"image {int(self.indices[i])}: crop values outside [0, 1] "
                             f"({float(x.min())}..{float(x.max())}); cache the transform without normalisation")
        q = x.mul(255).round_().to(torch.uint8)
        return q, int(y), float((x - q.float().div_(255)).abs().max()) if x.numel() else 0.0


class DecodedCache:
    """The decoded crops of one image folder under `root/<key>/` (see the module docstring).

    `workers` DataLoader processes decode; `log` (None: silent) gets one line per shard written; `hint`
    ends the message of a CacheError (e.g. the params that move or switch off the cache)."""

    def __init__(self, folder, root: str | Path, *, workers: int = 0, shard_size: int = SHARD_SIZE,
                 log: Callable[[str], None] | None = print, hint: str = "") -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.folder, self.workers, self.shard_size, self.log, self.hint = folder, workers, shard_size, log, hint
        self.identity = folder_identity(folder)
        self.key = identity_key(self.identity)
        self.path = Path(root) / self.key
        self._checked = np.zeros(len(folder.samples), dtype=bool)  # stamps compared in this process

    # ---- what is there

    def _markers(self) -> list[dict]:
        markers = []
        for marker in sorted(self.path.glob("*.json")):
            if marker.name == "meta.json":
                continue
            try:
                m = json.loads(marker.read_text())
            except (OSError, ValueError):
                continue  # unreadable: as if absent (its indices are decoded again)
            m["marker"] = marker
            if (self.path / m["images"]).exists():
                markers.append(m)
        return markers

    def _drop(self, m: dict) -> None:
        for p in (m["marker"], self.path / m["images"]):
            p.unlink(missing_ok=True)

    def _lookup(self, wanted: np.ndarray, drop: bool = False) -> tuple[list[dict], np.ndarray, np.ndarray]:
        """The shards there are, and for each wanted index its shard (-1: not cached) and row. A shard
        holding a wanted file whose size or mtime changed since it was written is passed over, and with
        `drop` (only under the lock: another process may be rewriting it) removed."""
        n = len(self.folder.samples)
        is_wanted = np.zeros(n, dtype=bool)
        is_wanted[wanted] = True
        shard, row = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64)
        kept = []
        for m in self._markers():
            idx = np.asarray(m["indices"], dtype=np.int64)
            todo = np.flatnonzero(is_wanted[idx] & ~self._checked[idx])
            try:
                stale = any(_stamp(self.folder.samples[idx[k]][0]) != m["stamps"][k] for k in todo.tolist())
            except OSError:
                stale = True
            if stale:
                if drop:
                    with self._writing():
                        self._drop(m)
                continue
            self._checked[idx[todo]] = True
            shard[idx], row[idx] = len(kept), np.arange(len(idx))
            kept.append(m)
        return kept, shard[wanted], row[wanted]

    # ---- building

    def _write_meta(self) -> None:
        meta = self.path / "meta.json"
        if not meta.exists():
            write_json(meta, {**self.identity, "key": self.key,
                              "note": "decoded [0,1] crops as uint8 (gattanet/data/decoded_cache.py); "
                                      "safe to delete: rebuilt on demand"})

    @contextmanager
    def _exclusive(self):
        """Hold the cache's lock file (one decoding process at a time, across processes)."""
        with self._writing():
            self.path.mkdir(parents=True, exist_ok=True)
            lock = open(self.path / ".lock", "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        finally:
            lock.close()  # releases the lock

    @contextmanager
    def _writing(self):
        """OSError of a write (disk full, read-only folder) as a CacheError that says what to do."""
        try:
            yield
        except OSError as e:
            raise CacheError(f"cannot write the decoded cache in {self.path}: {e}"
                             f"{'; ' + self.hint if self.hint else ''}") from e

    def _check_space(self, need: int) -> None:
        free = shutil.disk_usage(self.path).free
        if need > free:
            raise CacheError(f"decoding the crops needs {need / 1e9:.1f} GB in {self.path}, but only "
                             f"{free / 1e9:.1f} GB are free{'; ' + self.hint if self.hint else ''}")

    def _decode(self, missing: np.ndarray) -> None:
        """Decode `missing` (sorted folder indices) into new shards, each written whole."""
        with self._writing():
            self.path.mkdir(parents=True, exist_ok=True)
            self._write_meta()
        start = time.perf_counter()
        loader = DataLoader(_Quantised(self.folder, missing.tolist()), batch_size=_DECODE_BATCH,
                            num_workers=self.workers)
        shards = -(-len(missing) // self.shard_size)
        xs, ys, es, held, done, shape = [], [], [], 0, 0, None
        for q, y, err in loader:
            if shape is None:
                shape = tuple(q.shape[1:])
                self._check_space(len(missing) * q[0].numel())
            elif tuple(q.shape[1:]) != shape:
                raise ValueError(f"the decoded cache needs crops of one shape; got {tuple(q.shape[1:])} "
                                 f"after {shape} (use a transform that crops to a fixed size)")
            xs.append(q), ys.append(y), es.append(err)
            held += len(q)
            while held >= self.shard_size or (held and done + held == len(missing)):
                x, y_all, e_all = torch.cat(xs), torch.cat(ys), torch.cat(es)
                k = min(self.shard_size, held)
                with self._writing():
                    self._write_shard(missing[done:done + k], x[:k].numpy(), y_all[:k].tolist(),
                                      float(e_all[:k].max()))
                xs, ys, es = [x[k:]], [y_all[k:]], [e_all[k:]]
                done, held = done + k, held - k
                if self.log is not None:
                    self.log(f"decoded cache {self.path}: shard {-(-done // self.shard_size)}/{shards} "
                             f"({done}/{len(missing)} images, {time.perf_counter() - start:.0f} s)")

    def _write_shard(self, indices: np.ndarray, images: np.ndarray, labels: list[int], error: float) -> None:
        name = f"{int(indices[0]):08d}-{hashlib.sha256(indices.tobytes()).hexdigest()[:12]}"
        with atomic_path(self.path / f"{name}.npy") as tmp:
            np.save(tmp, np.ascontiguousarray(images))
        stamps = [_stamp(self.folder.samples[i][0]) for i in indices.tolist()]
        write_json(self.path / f"{name}.json", {  # the marker: written last, so a shard is whole or absent
            "images": f"{name}.npy", "shape": list(images.shape), "indices": indices.tolist(),
            "labels": labels, "stamps": stamps, "max_abs_error": error})
        self._checked[indices] = True

    # ---- reading

    def images(self, indices: Sequence[int] | np.ndarray | None = None) -> CachedImages:
        """The crops at folder `indices` (default: all), in that order, decoding those not cached yet."""
        n = len(self.folder.samples)
        wanted = np.arange(n, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(wanted) and not 0 <= wanted.min() <= wanted.max() < n:
            raise IndexError(f"indices must lie in [0, {n}), got {wanted.min()}..{wanted.max()}")
        shards, shard_of, row_of = self._lookup(wanted)
        if (shard_of < 0).any():
            with self._exclusive():  # another process may have decoded them while this one waited
                shards, shard_of, row_of = self._lookup(wanted, drop=True)
                missing = np.unique(wanted[shard_of < 0])
                if len(missing):
                    self._decode(missing)
                    shards, shard_of, row_of = self._lookup(wanted)
            if (shard_of < 0).any():
                raise CacheError(f"{self.path}: {int((shard_of < 0).sum())} images vanished from the cache "
                                 f"while it was built (another process removing shards?)")
        used, shard_of = np.unique(shard_of, return_inverse=True)
        labels = np.empty(len(wanted), dtype=np.int64)
        for s, u in enumerate(used.tolist()):
            at = shard_of == s
            labels[at] = np.asarray(shards[u]["labels"], dtype=np.int64)[row_of[at]]
        return CachedImages([str(self.path / shards[u]["images"]) for u in used.tolist()], shard_of, row_of,
                            labels, max((shards[u]["max_abs_error"] for u in used.tolist()), default=0.0))


class CachedImages(Dataset):
    """A view of cached crops: item i is (uint8 tensor (C, H, W), label); `take(positions)` reads a
    batch. Shards are memory-mapped lazily, once per process (DataLoader workers open their own)."""

    def __init__(self, files: list[str], shard_of: np.ndarray, row_of: np.ndarray, labels: np.ndarray,
                 max_abs_error: float) -> None:
        self.files, self.shard_of, self.row_of, self.labels = files, shard_of, row_of, labels
        self.max_abs_error = max_abs_error  # of round(255 x) / 255 vs the decoded float crops
        self.targets = labels.tolist()
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": {}}  # workers map the files themselves, not a pickled copy

    def _map(self, s: int) -> np.ndarray:
        if s not in self._maps:
            self._maps[s] = np.load(self.files[s], mmap_mode="r")
        return self._maps[s]

    def take(self, positions: Sequence[int] | np.ndarray) -> tuple[Tensor, Tensor]:
        """uint8 crops (B, C, H, W) and labels (B,) of the view's items at `positions`."""
        p = np.asarray(positions, dtype=np.int64)
        shard, row = self.shard_of[p], self.row_of[p]
        out = None
        for s in np.unique(shard).tolist():
            at = np.flatnonzero(shard == s)
            block = self._map(s)
            if out is None:
                out = np.empty((len(p), *block.shape[1:]), dtype=np.uint8)
            order = np.argsort(row[at], kind="stable")  # ascending rows: sequential reads of the file
            out[at[order]] = block[row[at][order]]
        if out is None:
            raise IndexError("take() of no positions")
        return torch.from_numpy(out), torch.from_numpy(self.labels[p])

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        x, y = self.take([i])
        return x[0], int(y[0])


# ---------------------------------------------------------------- the loader


class _BatchReader(Dataset):
    """dataset[list of positions] -> (uint8 batch, labels, positions): one read per batch, in a worker."""

    def __init__(self, images: CachedImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, positions: list[int]):
        x, y = self.images.take(positions)
        return x, y, torch.as_tensor(positions, dtype=torch.int64)


class CachedLoader:
    """Batches of cached crops with gattanet.data.loader's protocol: uint8 to the device, /255 there, then
    noise (per position in the view, as FolderLoader draws it), clip, normalise. `workers` processes
    read the memory-mapped shards (0: this process)."""

    def __init__(self, images: CachedImages, batch_size: int, finish: Finish, *, shuffle: bool = False,
                 seed: int = 0, workers: int = 0) -> None:
        _check_batch_size(batch_size)
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.finish, self.device = finish, finish.device
        self.num_samples, self.batch_size = len(images), batch_size
        self.sampler = _EpochBatches(len(images), batch_size, shuffle, seed, SINGLE)
        self.loader = DataLoader(_BatchReader(images), batch_size=None, sampler=self.sampler,
                                 num_workers=workers, pin_memory=self.device.type == "cuda",
                                 persistent_workers=workers > 0)

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def epoch(self, e: int) -> Iterator[tuple[Tensor, Tensor]]:
        self.sampler.epoch = e  # read when the DataLoader iterator starts, in this process
        for x, y, idx in self.loader:
            x = x.to(self.device, non_blocking=True).float().div_(255)
            yield self.finish(x, idx), y.to(self.device, non_blocking=True)
