"""Batched on-device augmentation (random rotation, shift, horizontal flip) with one
affine_grid/grid_sample call per batch, as the paper's Keras ImageDataGenerator did per image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class Augment:
    """Per image: rotation uniform in [-rotation, rotation] degrees, translation uniform in
    +-shift of the width/height, horizontal flip with p=0.5; bilinear, zero fill.
    rotation=0, shift=0 or hflip=False switch a part off."""

    def __init__(self, rotation: float = 20.0, shift: float = 0.2, hflip: bool = True) -> None:
        if not 0 <= rotation <= 180:
            raise ValueError(f"rotation must lie in [0, 180] degrees, got {rotation}")
        if not 0 <= shift <= 1:
            raise ValueError(f"shift must lie in [0, 1] (a fraction of the size), got {shift}")
        self.rotation, self.shift, self.hflip = float(rotation), float(shift), bool(hflip)

    def __repr__(self) -> str:
        return f"Augment(rotation={self.rotation}, shift={self.shift}, hflip={self.hflip})"

    @property
    def active(self) -> bool:
        return self.rotation > 0 or self.shift > 0 or self.hflip

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Augment a float batch (B, C, H, W); the draws come from `generator` (on any device)."""
        if x.dim() != 4 or not x.is_floating_point():
            raise ValueError(f"expected a float batch (B, C, H, W), got {x.dtype} {tuple(x.shape)}")
        if not self.active:
            return x
        u = torch.rand((x.shape[0], 4), generator=generator, device=generator.device).to(x.device)
        angle = torch.deg2rad((2 * u[:, 0] - 1) * self.rotation)
        shift = (2 * u[:, 1:3] - 1) * (2 * self.shift)  # grid coordinates span 2 per size
        flip = torch.where(u[:, 3] < 0.5, -1.0, 1.0) if self.hflip else torch.ones_like(angle)
        cos, sin = torch.cos(angle), torch.sin(angle)
        aspect = x.shape[2] / x.shape[3]  # grid coordinates are scaled per axis: rotate in pixels
        # theta maps output coordinates to input ones: flip, then rotate, then shift.
        theta = torch.stack([torch.stack([cos * flip, -sin * aspect, shift[:, 0]], 1),
                             torch.stack([sin * flip / aspect, cos, shift[:, 1]], 1)], 1).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

