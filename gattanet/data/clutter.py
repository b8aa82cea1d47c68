"""Cluttered, translated Fashion-MNIST: each image a canvas holding one item at a random position and
fragments cut from other items of the same split; the label is the item's.

Made from a raw PCG64 stream with integer arithmetic only (area resampling with exact integer weights,
uniform integers by multiply-shift, compositing by uint8 max), so one seed gives the same bytes on every
machine and numpy version: no float operation and no numpy sampling algorithm enters the images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gattanet.data.datasets import TensorData, _make_splits, read_fashion_split
from gattanet.data.specs import FASHION_CLASSES

NAME = "fashion-clutter"  # the dataset's name in gattanet.data.specs.DATASETS
SPLITS = ("train", "test")  # each its own random stream, its canvases made of its own items only
MAX_CANVAS = 128  # 70,000 canvases of canvas² bytes are held in memory
MAX_FRAGMENTS = 64
SEED_END = 2 ** 32  # seeds must be below it: numpy's (and UMAP's) random states take 32-bit seeds


@dataclass(frozen=True)
class ClutterSettings:
    """The task's definition. Canvas i of a split holds item i of that split, area-resampled from 28×28 to
    item_size × item_size, at a uniform position wholly inside the canvas, and `fragments` squares of
    fragment_size × fragment_size, each cut at a uniform position from another item of the same split
    (resampled the same way) and laid at a uniform position wholly inside the canvas; pixels combine by max."""

    canvas: int = 32  # side of the image; 32 keeps the toy CNN as it is (619,786 parameters on one channel)
    item_size: int = 20  # side of the placed item (Fashion-MNIST's own is 28): 13 positions per axis
    fragments: int = 4  # clutter pieces per image, as cluttered MNIST (Mnih et al., 2014)
    fragment_size: int = 8  # side of each piece, in the resampled items' pixels (40 % of an item's side)
    seed: int = 0  # the generator's own, apart from the training seeds

    def __post_init__(self) -> None:
        bounds = {"canvas": (1, MAX_CANVAS), "item_size": (1, self.canvas), "fragments": (0, MAX_FRAGMENTS),
                  "fragment_size": (1, self.item_size), "seed": (0, SEED_END - 1)}
        why = {"item_size": " (the canvas)", "fragment_size": " (item_size: fragments are cut from items)",
               "canvas": " (canvases are held in memory)", "seed": ""}
        for name, (lo, hi) in bounds.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{name}: expected an integer, got {v!r}")
            if not lo <= v <= hi:
                raise ValueError(f"{name}: must lie in [{lo}, {hi}]{why.get(name, '')}, got {v}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Cluttered:
    """One split's canvases and how each was made (row, column of top-left corners)."""

    images: np.ndarray  # (N, 1, canvas, canvas) uint8
    labels: np.ndarray  # (N,) int64: canvas i's label is item i's
    item_at: np.ndarray  # (N, 2): where item i lies on canvas i
    sources: np.ndarray  # (N, F): the item of the split each fragment is cut from (never i itself)
    cuts: np.ndarray  # (N, F, 2): where each fragment is cut from its resampled source
    fragment_at: np.ndarray  # (N, F, 2): where each fragment lies on the canvas


def area_weights(src: int, dst: int) -> np.ndarray:
    """(dst, src) integer overlaps of output pixel i, [i·src, (i+1)·src), with input pixel j, [j·dst, (j+1)·dst),
    in units of 1/dst input pixel; every row sums to src."""
    i, j = np.arange(dst)[:, None], np.arange(src)[None, :]
    overlap = np.minimum((i + 1) * src, (j + 1) * dst) - np.maximum(i * src, j * dst)
    return np.clip(overlap, 0, None).astype(np.int64)


def resize_area(images: np.ndarray, size: int, chunk: int = 2048) -> np.ndarray:
    """uint8 (N, H, H) -> (N, size, size) by area averaging in exact integer arithmetic, rounded half up."""
    n, h, w = images.shape
    if h != w:
        raise ValueError(f"images must be square, got {h}x{w}")
    if size == h:
        return images.copy()
    weights, total = area_weights(h, size), h * h
    out = np.empty((n, size, size), np.uint8)
    for start in range(0, n, chunk):
        summed = weights @ images[start:start + chunk].astype(np.int64) @ weights.T
        out[start:start + chunk] = (summed + total // 2) // total
    return out


def uniform(raw: np.ndarray, bound) -> np.ndarray:
    """Integers in [0, bound) from raw 64-bit draws, floor(raw · bound / 2^64) computed exactly in uint64
    (bound < 2^32), as int64."""
    bound = np.asarray(bound, dtype=np.uint64)
    hi, lo = raw >> np.uint64(32), raw & np.uint64(0xFFFFFFFF)
    return ((hi * bound + ((lo * bound) >> np.uint64(32))) >> np.uint64(32)).astype(np.int64)


def draws(seed: int, split: str, n: int, fragments: int) -> np.ndarray:
    """(n, 2 + 5·fragments) raw uint64 draws of one split: the item's row and column, then per fragment its
    source, cut row, cut column, row and column. PCG64's raw stream is fixed by its algorithm."""
    bits = np.random.PCG64(np.random.SeedSequence([seed, SPLITS.index(split)]))
    return bits.random_raw(n * (2 + 5 * fragments)).reshape(n, 2 + 5 * fragments)


def _paste(canvases: np.ndarray, patches: np.ndarray, at: np.ndarray) -> None:
    """canvases[i] at its corner at[i] becomes the max of itself and patches[i] (in place)."""
    span = np.arange(patches.shape[1])
    rows = at[:, 0, None, None] + span[None, :, None]
    cols = at[:, 1, None, None] + span[None, None, :]
    which = np.arange(len(canvases))[:, None, None]
    canvases[which, rows, cols] = np.maximum(canvases[which, rows, cols], patches)


def layout(settings: ClutterSettings, split: str, n: int) -> tuple[np.ndarray, ...]:
    """Where everything goes on the n canvases of a split, from the generator's draws alone (no pixel):
    item_at (n, 2), sources (n, F), cuts (n, F, 2), fragment_at (n, F, 2), as `Cluttered` holds them."""
    s = settings
    raw = draws(s.seed, split, n, s.fragments)
    item_at = uniform(raw[:, :2], s.canvas - s.item_size + 1)
    fragment = raw[:, 2:].reshape(n, s.fragments, 5)
    sources = uniform(fragment[:, :, 0], max(n - 1, 1))
    sources += sources >= np.arange(n)[:, None]  # one of the n - 1 others
    cuts = uniform(fragment[:, :, 1:3], s.item_size - s.fragment_size + 1)
    fragment_at = uniform(fragment[:, :, 3:5], s.canvas - s.fragment_size + 1)
    return item_at, sources, cuts, fragment_at


BACKGROUND, ITEM, CLUTTER = 0, 1, 2  # `regions`' labels


def regions(images: np.ndarray, settings: ClutterSettings, split: str) -> np.ndarray:
    """(N, canvas, canvas) int8 label of every pixel of a split's canvases (uint8 (N, 1, canvas, canvas), in
    the generator's order): ITEM where there is ink inside the item's square, CLUTTER where there is ink
    outside it (only fragments lie there), BACKGROUND where there is none. A fragment's ink that overlaps the
    item's square counts as the item's: pixels combine by max, so the two cannot be told apart there."""
    n, s = len(images), settings
    if images.shape[1:] != (1, s.canvas, s.canvas):
        raise ValueError(f"images must be (N, 1, {s.canvas}, {s.canvas}) canvases, got {images.shape}")
    item_at = layout(s, split, n)[0]
    span = np.arange(s.canvas)
    rows = (span[None, :] >= item_at[:, :1]) & (span[None, :] < item_at[:, :1] + s.item_size)
    cols = (span[None, :] >= item_at[:, 1:]) & (span[None, :] < item_at[:, 1:] + s.item_size)
    inside, ink = rows[:, :, None] & cols[:, None, :], images[:, 0] > 0
    return np.where(ink, np.where(inside, ITEM, CLUTTER), BACKGROUND).astype(np.int8)


def generate(items: np.ndarray, labels: np.ndarray, settings: ClutterSettings, split: str) -> Cluttered:
    """The canvases of one split from its items (uint8 (N, H, H)) and labels: canvas i holds item i."""
    if split not in SPLITS:
        raise ValueError(f"split: {split!r} is not allowed; allowed: {', '.join(SPLITS)}")
    if items.dtype != np.uint8 or items.ndim != 3 or len(labels) != len(items):
        raise ValueError(f"items must be uint8 (N, H, H) with one label each, got {items.dtype} {items.shape} "
                         f"and {len(labels)} labels")
    s, n = settings, len(items)
    if s.fragments and n < 2:
        raise ValueError(f"fragments are cut from other items of the split, but it holds {n}")
    scaled = resize_area(items, s.item_size)
    item_at, sources, cuts, fragment_at = layout(s, split, n)
    canvases = np.zeros((n, s.canvas, s.canvas), np.uint8)
    _paste(canvases, scaled, item_at)
    span = np.arange(s.fragment_size)
    for k in range(s.fragments):
        patches = scaled[sources[:, k, None, None], cuts[:, k, 0, None, None] + span[None, :, None],
                         cuts[:, k, 1, None, None] + span[None, None, :]]
        _paste(canvases, patches, fragment_at[:, k])
    return Cluttered(canvases[:, None], np.asarray(labels, dtype=np.int64), item_at, sources, cuts, fragment_at)


def cluttered_fashion(root: str | Path, settings: ClutterSettings) -> dict[str, TensorData]:
    """Train and test splits of cluttered Fashion-MNIST from the IDX files in `root`, each made from the
    matching Fashion-MNIST split alone (the validation split is carved from train later, as for Fashion-MNIST)."""
    made = {split: generate(*read_fashion_split(root, split), settings, split) for split in SPLITS}
    return _make_splits(made["train"].images, made["train"].labels, made["test"].images, made["test"].labels,
                        FASHION_CLASSES)
