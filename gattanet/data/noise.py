"""Seeded additive Gaussian noise on [0,1] images, reproducible per image index, and the
seed derivation every seeded loop of the engine uses."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

MAX_INDEX = 2**32


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from a tuple of ints, e.g. (seed, epoch): distinct tuples give
    unrelated seeds (unlike seed + epoch, where (0, 1) and (1, 0) collide)."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def indexed_noise(indices: Tensor, shape: tuple[int, ...], noise_seed: int,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal noise (len(indices), *shape) where row i depends only on
    (noise_seed, indices[i]): the same image gets the same draw whatever the batch size or
    order. Draws differ between device types (CPU vs CUDA generators)."""
    idx = indices.tolist()
    if idx and not 0 <= min(idx) <= max(idx) < MAX_INDEX:
        raise ValueError(f"image indices must lie in [0, 2**32), got {min(idx)}..{max(idx)}")
    device = torch.device(device)
    out = torch.empty((len(idx), *shape), device=device, dtype=dtype)
    gen = torch.Generator(device=device)
    for row, i in enumerate(idx):
        gen.manual_seed(derive_seed(noise_seed, i))
        torch.randn(shape, generator=gen, device=device, dtype=dtype, out=out[row])
    return out


def add_noise(x01: Tensor, sigma: float, generator_or_noise: torch.Generator | Tensor,
              clip: bool = True) -> Tensor:
    """x01 + sigma * N(0, 1), clipped to [0, 1] if `clip`. The standard normal draws come
    from a generator or are given as a tensor of x01's shape (see `indexed_noise`)."""
    if not sigma >= 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    if isinstance(generator_or_noise, Tensor):
        if generator_or_noise.shape != x01.shape:
            raise ValueError(f"noise shape {tuple(generator_or_noise.shape)} != image shape "
                             f"{tuple(x01.shape)}")
        noise = generator_or_noise
    else:
        noise = torch.randn(x01.shape, generator=generator_or_noise,
                            device=generator_or_noise.device, dtype=x01.dtype).to(x01.device)
    out = x01 + sigma * noise.to(device=x01.device, dtype=x01.dtype) if sigma > 0 else x01
    return out.clamp(0.0, 1.0) if clip else out
