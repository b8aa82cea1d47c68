"""The backbone registry: `ARCHS` and `build_backbone` (the protocol is `gattanet.models.backbone.Backbone`)."""

from gattanet.models.backbone import Backbone
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
