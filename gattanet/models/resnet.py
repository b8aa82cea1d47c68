"""torchvision ResNet18/50 as a backbone: conv taps layer1..layer4, dense taps avgpool and logits.

The torchvision modules are held under their own names, so `state_dict()` has torchvision's key
layout and torchvision state_dict files load directly. Weights never download: "imagenet" reads
the file from the local torch hub cache or fails saying where to put it.
"""

import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import ResNet18_Weights, ResNet50_Weights

from gattanet.models.backbone import Backbone

WEIGHTS = {"resnet18": ResNet18_Weights.IMAGENET1K_V1, "resnet50": ResNet50_Weights.IMAGENET1K_V1}


class WeightsError(ValueError):
    """Pretrained weights are missing, unreadable, or do not fit the requested network."""


def imagenet_cache_path(arch: str) -> Path:
    """Where torch hub keeps (and where we look for) the ImageNet weights file of `arch`."""
    url = _weights_enum(arch).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


class ResNetBackbone(Backbone):
    """ResNet18/50; `weights` is None (random init), "imagenet" (hub cache only) or a state_dict path."""

    tap_names = ("layer1", "layer2", "layer3", "layer4", "avgpool", "logits")

    def __init__(self, arch: str, num_classes: int = 1000, in_channels: int = 3,
                 weights: str | os.PathLike | None = None, input_size: int = 224):
        super().__init__()
        _weights_enum(arch)
        if weights == "imagenet" and num_classes != 1000:
            raise WeightsError(f"{arch}: ImageNet weights have 1000 classes, asked for {num_classes}; "
                               "use weights=None or a state_dict file with that many classes")
        self.arch, self.num_classes, self.in_channels, self.input_size = arch, num_classes, in_channels, input_size
        net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        if weights == "imagenet":
            net.load_state_dict(_read_state_dict(imagenet_cache_path(arch), arch, imagenet=True))
        if in_channels != 3:
            net.conv1 = _adapt_conv1(net.conv1, in_channels, pretrained=weights == "imagenet")
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"):
            setattr(self, name, getattr(net, name))
        if weights is not None and weights != "imagenet":
            self._load_file(Path(weights))

    def segments(self) -> list[Callable[[Tensor], Tensor]]:
        return [lambda x: self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x))))),
                self.layer2, self.layer3, self.layer4,
                lambda x: torch.flatten(self.avgpool(x), 1), self.fc]

    def _load_file(self, path: Path) -> None:
        state = _read_state_dict(path, self.arch, imagenet=False)
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
                 for k, v in own.items() if k in state and state[k].shape != v.shape]
        if missing or unexpected or wrong:
            parts = [f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                     for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                         ("wrong shapes", wrong)) if keys]
            raise WeightsError(f"{path}: does not fit {self.arch} with {self.in_channels} input channels "
                               f"and {self.num_classes} classes ({'; '.join(parts)})")
        self.load_state_dict(state)


def _weights_enum(arch: str):
    try:
        return WEIGHTS[arch]
    except KeyError:
        raise ValueError(f"unknown ResNet arch {arch!r}; allowed: {', '.join(WEIGHTS)}") from None


def _read_state_dict(path: Path, arch: str, imagenet: bool) -> dict[str, Tensor]:
    """A state_dict of tensors from `path`, loaded with weights_only=True, or a WeightsError saying why not."""
    if not path.is_file():
        if imagenet:
            url = _weights_enum(arch).url
            raise WeightsError(
                f"ImageNet weights for {arch} are not in the local torch hub cache: expected {path}. "
                f"Nothing is downloaded here; on a machine with internet fetch {url} (or run "
                f"`python -c \"import torchvision; torchvision.models.{arch}(weights='IMAGENET1K_V1')\"`) "
                f"and copy the file to {path} (TORCH_HOME moves the cache).")
        raise WeightsError(f"{arch} weights file {path} does not exist; give an existing state_dict file, "
                           "'imagenet' or None")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: cannot be read as a state_dict ({type(e).__name__}: {e}); "
                           "the file is corrupt, truncated or holds more than tensors") from e
    if isinstance(state, dict) and state.get("format") == "gattanet":
        raise WeightsError(f"{path} is a gattanet checkpoint, not a plain state_dict; "
                           "load it with gattanet.engine.checkpoint.load_backbone")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor)
                                              for k, v in state.items()):
        raise WeightsError(f"{path}: expected a state_dict (a dict of name -> tensor), got {type(state).__name__}")
    return state


def _adapt_conv1(conv: nn.Conv2d, in_channels: int, pretrained: bool) -> nn.Conv2d:
    """A conv1 for `in_channels` inputs. From pretrained RGB filters it starts at their channel mean,
    scaled so a grey image gives the same response as its RGB copy would; otherwise a fresh init."""
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)
    if pretrained:
        with torch.no_grad():
            mean = conv.weight.mean(dim=1, keepdim=True)
            new.weight.copy_(mean.repeat(1, in_channels, 1, 1) * (3 / in_channels))
    return new
