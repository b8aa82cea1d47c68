"""The backbone registry: `ARCHS`, `build_backbone`, and `backbone_taps` (the taps without the weights);
the protocol is `gattanet.models.backbone.Backbone`."""

import functools

import torch

from gattanet.models.backbone import Backbone
from gattanet.models.taps import Tap
from gattanet.models.toy import ToyCNN

ARCHS = ("toy", "resnet18", "resnet50")


def build_backbone(arch: str, num_classes: int, in_channels: int, weights: str | None = None,
                   input_size: int = 32, **kw) -> Backbone:
    """A backbone by name. `kw` goes to ToyCNN (widths, hidden, dropout); ResNets take none."""
    if arch == "toy":
        if weights is not None:
            raise ValueError("the toy backbone has no pretrained weights; load a trained one with "
                             "gattanet.engine.checkpoint.load_backbone")
        return ToyCNN(in_channels, num_classes, input_size=input_size, **kw)
    if arch in ("resnet18", "resnet50"):
        from gattanet.models.resnet import ResNetBackbone  # here: importing torchvision costs toy-only runs ~1 s
        if kw:
            raise ValueError(f"{arch} takes no extra arguments; got {', '.join(kw)}")
        return ResNetBackbone(arch, num_classes, in_channels, weights=weights, input_size=input_size)
    raise ValueError(f"unknown arch {arch!r}; allowed: {', '.join(ARCHS)}")


def meta_backbone(arch: str, num_classes: int, in_channels: int, input_size: int = 32) -> Backbone:
    """The backbone built on the meta device: its structure (taps, parameter count) without memory, weights
    or RNG draws."""
    with torch.device("meta"):
        return build_backbone(arch, num_classes, in_channels, input_size=input_size)


@functools.cache
def backbone_taps(arch: str, num_classes: int, in_channels: int, input_size: int = 32) -> tuple[Tap, ...]:
    """The taps of a backbone (in tap order) without building its weights; ValueError for an unknown arch."""
    return tuple(meta_backbone(arch, num_classes, in_channels, input_size).taps())
