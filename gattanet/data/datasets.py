"""Datasets: read Fashion-MNIST (IDX), CIFAR-10/100 (python pickles) and ImageNet folders;
materialise the small sets as uint8 tensors with their normalisation statistics."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from gattanet.errors import InputError
from gattanet.io import atomic_path, torch_load_cause
from gattanet.data.specs import FASHION_CLASSES

RAW_DATASETS = ("fashion-mnist", "cifar10", "cifar100")
DEFAULT_ROOTS = {
    "fashion-mnist": Path("/usr/share/datasets/fashion-mnist"),  # Debian: dataset-fashion-mnist
    "cifar10": Path("data/raw"),  # holds cifar-10-batches-py/
    "cifar100": Path("data/raw"),  # holds cifar-100-python/
}
DATA_FORMAT = "gattanet-data"
DATA_VERSION = 1


class DatasetError(InputError):
    """A dataset is missing, truncated or not in the expected format; the message says which
    file and how to get it."""


@dataclass
class TensorData:
    """A whole image set in memory: uint8 images (N, C, H, W), int64 labels (N,), the
    per-channel mean/std of the [0,1]-scaled *training* images, and the class names."""

    images: Tensor
    labels: Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        self.mean, self.std, self.classes = tuple(self.mean), tuple(self.std), tuple(self.classes)
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.images),):
            raise ValueError(f"labels must be int64 ({len(self.images)},), got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")
        channels = self.images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"mean/std need one value per channel ({channels}), got "
                             f"{len(self.mean)}/{len(self.std)}")
        if any(not s > 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < len(self.classes):
            raise ValueError(f"labels must lie in [0, {len(self.classes)}) (one per class name)")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: Tensor | Sequence[int]) -> TensorData:
        """The images at `idx`, with the same statistics and classes."""
        idx = torch.as_tensor(idx, dtype=torch.int64)
        return TensorData(self.images[idx], self.labels[idx], self.mean, self.std, self.classes)


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images scaled to [0, 1]."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].to(torch.float64).div_(255)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def _make_splits(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, classes: Sequence[str]) -> dict[str, TensorData]:
    train_images = torch.from_numpy(np.ascontiguousarray(train_x))
    mean, std = channel_stats(train_images)
    return {
        "train": TensorData(train_images, torch.from_numpy(train_y.astype(np.int64)), mean, std, classes),
        "test": TensorData(torch.from_numpy(np.ascontiguousarray(test_x)),
                           torch.from_numpy(test_y.astype(np.int64)), mean, std, classes),
    }


# --- Fashion-MNIST: IDX files ------------------------------------------------------------

_IDX_STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _fashion_hint(root: Path) -> str:
    return (f"Install Debian's package (`apt-get install dataset-fashion-mnist`, files land in "
            f"{DEFAULT_ROOTS['fashion-mnist']}), put the four IDX files "
            f"({', '.join(s for pair in _IDX_STEMS.values() for s in pair)}, gzipped or plain) "
            f"in {root}, or pass download=True where the internet is reachable")


def _find_idx(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "FashionMNIST" / "raw"):  # the second is torchvision's layout
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX array (gzip or plain); DatasetError if the magic number or the
    size disagrees with the header."""
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        with (gzip.open if gzipped else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: cannot read ({e}); the file is truncated or corrupt") from e
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise DatasetError(f"{path}: not an unsigned-byte IDX file (bad magic number "
                           f"{raw[:4].hex() or 'empty'}, expected 000008xx)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(dims)
    if len(raw) != expected:
        raise DatasetError(f"{path}: truncated or corrupt: the header announces {dims} "
                           f"({expected} bytes) but the file holds {len(raw)} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_fashion_split(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One Fashion-MNIST split as stored: uint8 images (N, 28, 28) and labels (N,); DatasetError if missing or bad."""
    root = Path(root)
    arrays = []
    for stem, ndim in zip(_IDX_STEMS[split], (3, 1)):
        path = _find_idx(root, stem)
        if path is None:
            raise DatasetError(f"Fashion-MNIST file not found: {root / (stem + '.gz')} (nor "
                               f"{stem} unzipped). {_fashion_hint(root)}")
        array = read_idx(path)
        if array.ndim != ndim:
            raise DatasetError(f"{path}: expected a {ndim}-d IDX array, got shape {array.shape}")
        arrays.append((path, array))
    (ipath, images), (lpath, labels) = arrays
    if len(images) != len(labels):
        raise DatasetError(f"{ipath} holds {len(images)} images but {lpath} {len(labels)} labels")
    if images.shape[1:] != (28, 28):
        raise DatasetError(f"{ipath}: expected 28x28 images, got {images.shape[1:]}")
    if len(labels) and labels.max() >= len(FASHION_CLASSES):
        raise DatasetError(f"{lpath}: label {labels.max()} outside [0, {len(FASHION_CLASSES)})")
    return images, labels


def _read_fashion_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_fashion_split(root, split)
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))[:, None]  # 28 -> 32, one channel
    return padded, labels


def _load_fashion(root: Path) -> dict[str, TensorData]:
    train = _read_fashion_split(root, "train")
    test = _read_fashion_split(root, "test")
    return _make_splits(*train, *test, FASHION_CLASSES)


# --- CIFAR-10/100: python pickles --------------------------------------------------------

_CIFAR = {  # folder, train files, test file, meta file, label key, class-name key
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                "test_batch", "batches.meta", "labels", "label_names"),
    "cifar100": ("cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names"),
}


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a data file cannot run code."""

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "numpy" and name in {"_reconstruct", "ndarray", "dtype",
                                                         "_frombuffer", "scalar"}:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_pickle(path: Path, hint: str) -> dict:
    if not path.is_file():
        raise DatasetError(f"CIFAR file not found: {path}. {hint}")
    try:
        with open(path, "rb") as f:
            obj = _NumpyUnpickler(f, encoding="latin1").load()
    except Exception as e:  # truncated/corrupt pickles fail in many ways
        raise DatasetError(f"{path}: cannot unpickle ({type(e).__name__}: {e}); the file is "
                           f"truncated or corrupt. {hint}") from e
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a dict, got {type(obj).__name__}")
    return obj


def _cifar_batch(path: Path, label_key: str, num_classes: int, hint: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_pickle(path, hint)
    try:
        data, labels = np.asarray(batch["data"]), np.asarray(batch[label_key], dtype=np.int64)
    except KeyError as e:
        raise DatasetError(f"{path}: missing key {e} (need 'data' and {label_key!r})") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: 'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (len(data),):
        raise DatasetError(f"{path}: {len(data)} images but {labels.shape} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(f"{path}: labels outside [0, {num_classes})")
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar(name: str, root: Path) -> dict[str, TensorData]:
    folder, train_files, test_file, meta_file, label_key, names_key = _CIFAR[name]
    base = root if root.name == folder else root / folder
    hint = (f"Download the python version of {name.upper()} from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html and extract it so that {base} exists, "
            f"or pass download=True where the internet is reachable")
    meta = _read_pickle(base / meta_file, hint)
    if names_key not in meta:
        raise DatasetError(f"{base / meta_file}: missing key {names_key!r}")
    classes = tuple(str(c) for c in meta[names_key])
    train = [_cifar_batch(base / f, label_key, len(classes), hint) for f in train_files]
    test = _cifar_batch(base / test_file, label_key, len(classes), hint)
    return _make_splits(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
                        *test, classes)


def _download(name: str, root: Path) -> None:
    """Fetch a dataset with torchvision into `root` (FashionMNIST/raw/ or the CIFAR folder)."""
    import torchvision.datasets as tvd

    cls = {"fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as e:  # no network, unwritable root, bad checksum...
        raise DatasetError(f"downloading {name} into {root} failed ({type(e).__name__}: {e})") from e


def load_raw(name: str, root: str | Path | None = None, *, download: bool = False) -> dict[str, TensorData]:
    """The train and test splits of a small dataset as uint8 tensors (Fashion-MNIST zero-padded
    to 32x32). With `download`, missing files are fetched by torchvision first."""
    if name not in RAW_DATASETS:
        raise ValueError(f"unknown raw dataset {name!r}; allowed: {', '.join(RAW_DATASETS)}")
    root = Path(root) if root is not None else DEFAULT_ROOTS[name]
    load = _load_fashion if name == "fashion-mnist" else lambda r: _load_cifar(name, r)
    try:
        return load(root)
    except DatasetError:
        if not download:
            raise
    _download(name, root)
    return load(root)


# --- materialised tensors -----------------------------------------------------------------

def _digest(name: str, splits: dict[str, TensorData]) -> str:
    first = splits["train"]
    h = hashlib.sha256(json.dumps([name, first.classes, first.mean, first.std]).encode())
    for split in ("train", "test"):
        h.update(splits[split].images.contiguous().numpy())
        h.update(splits[split].labels.contiguous().numpy())
    return h.hexdigest()


def save_tensors(path: str | Path, splits: dict[str, TensorData], name: str, source: dict | None = None) -> str:
    """Write train/test tensors, classes, statistics and a sha256 of it all atomically;
    returns the sha256. `source`: what a generated set was made with (kept beside it, read back in meta)."""
    if set(splits) != {"train", "test"}:
        raise ValueError(f"splits must be exactly 'train' and 'test', got {sorted(splits)}")
    train, test = splits["train"], splits["test"]
    if (train.classes, train.mean, train.std) != (test.classes, test.mean, test.std):
        raise ValueError("train and test must share classes and mean/std")
    digest = _digest(name, splits)
    payload = {
        "format": DATA_FORMAT, "version": DATA_VERSION, "name": name, "classes": list(train.classes),
        "mean": list(train.mean), "std": list(train.std), "sha256": digest,
        **{s: {"images": splits[s].images.contiguous(), "labels": splits[s].labels.contiguous()}
           for s in ("train", "test")},
        **({"source": source} if source is not None else {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return digest


def load_tensors(path: str | Path, hint: str = "rebuild it from the raw dataset") -> dict:
    """{"train": TensorData, "test": TensorData, "meta": {name, classes, mean, std, sha256[, source]}}
    from `save_tensors`; DatasetError if missing, corrupt or its sha256 does not match (ending with `hint`,
    what to do about it)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset tensors not found: {path}; {hint}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != DATA_FORMAT or payload.get("version") != DATA_VERSION:
            raise ValueError(f"format {payload.get('format')!r} v{payload.get('version')!r}, "
                             f"expected {DATA_FORMAT!r} v{DATA_VERSION}")
        meta = {k: payload[k] for k in ("name", "classes", "mean", "std", "sha256", "source") if k in payload}
        splits = {s: TensorData(payload[s]["images"], payload[s]["labels"], meta["mean"],
                                meta["std"], meta["classes"]) for s in ("train", "test")}
    except Exception as e:
        raise DatasetError(f"{path}: corrupt or not a gattanet data file ({torch_load_cause(e)}); {hint}") from e
    if _digest(meta["name"], splits) != meta["sha256"]:
        raise DatasetError(f"{path}: content does not match its sha256; {hint}")
    return {**splits, "meta": meta}


def split_train_val(data: TensorData, val_fraction: float, seed: int) -> tuple[TensorData, TensorData]:
    """A fixed-seed random split of the training set into (train, val); both keep the full
    training set's statistics, so the normalisation is the same for every stage."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    n_val = round(len(data) * val_fraction)
    if not 0 < n_val < len(data):
        raise ValueError(f"val_fraction {val_fraction} of {len(data)} images leaves an empty split")
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.subset(perm[n_val:].sort().values), data.subset(perm[:n_val].sort().values)


# --- ImageNet-style folders ---------------------------------------------------------------

IMAGENET_SPLITS = ("train", "val")


def plain_transform(crop_size: int = 224, resize_size: int = 256,
                    interpolation=None, antialias: bool = True) -> Callable:
    """PIL image -> [0,1] float tensor: resize, centre crop, no normalisation (that runs on
    the device, after the noise)."""
    from torchvision import transforms as T

    interpolation = interpolation if interpolation is not None else T.InterpolationMode.BILINEAR
    return T.Compose([T.Resize(resize_size, interpolation=interpolation, antialias=antialias),
                      T.CenterCrop(crop_size), T.ToTensor()])


def transform_from_weights(weights) -> tuple[Callable, tuple[float, ...], tuple[float, ...]]:
    """The evaluation transform of torchvision `weights` minus its normalisation, and the
    mean/std it would have normalised with."""
    preset = weights.transforms()
    transform = plain_transform(preset.crop_size[0], preset.resize_size[0],
                                preset.interpolation, bool(preset.antialias))
    return transform, tuple(preset.mean), tuple(preset.std)


def imagenet_split(root: str | Path, split: str, transform: Callable | None):
    """torchvision ImageFolder over `root/train` or `root/val` (one sub-folder per class)."""
    from torchvision.datasets import ImageFolder

    if split not in IMAGENET_SPLITS:
        raise ValueError(f"unknown ImageNet split {split!r}; allowed: {', '.join(IMAGENET_SPLITS)}")
    folder = Path(root) / split
    hint = (f"expected one sub-folder per class with its images under {folder} (ImageFolder "
            f"layout); get ILSVRC2012 from https://image-net.org and arrange train/ and val/ "
            f"by class (e.g. with the valprep script)")
    if not folder.is_dir():
        raise DatasetError(f"ImageNet folder not found: {folder}; {hint}")
    try:
        return ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, OSError) as e:
        raise DatasetError(f"{folder}: {e}; {hint}") from e
