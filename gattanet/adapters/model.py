"""A frozen backbone with one related-work attention adapter on each of its conv taps."""

from collections.abc import Callable

import torch
from torch import Tensor, nn

from gattanet.adapters.modules import build_adapter
from gattanet.models.backbone import Backbone


class AdaptedModel(nn.Module):
    """Backbone frozen as in GAttANet (no gradients, always in eval mode) + one adapter per conv tap.

    The adapters sit on the same conv taps GAttANet modulates; dense taps get none (every related
    method is a feature-map module). Adapter i rewrites tap i's activation through `backbone.run`,
    so later adapters see the effect of earlier ones, as in a network built with them."""

    def __init__(self, backbone: Backbone, method: str, width: int):
        super().__init__()
        self.backbone, self.method, self.width = backbone, method, width
        self.taps = backbone.taps()
        conv = [t for t in self.taps if t.kind == "conv"]
        if not conv:
            raise ValueError(f"the {backbone.arch} backbone has no conv taps to put adapters on")
        self.adapters = nn.ModuleDict(
            {t.name: build_adapter(method, t.channels, width, t.shape[1:]) for t in conv})
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> "AdaptedModel":
        """Only the adapters follow `mode`; the frozen backbone stays in eval (dropout off, BN stats fixed)."""
        self.training = mode
        self.adapters.train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        transforms = [_keep_layout(self.adapters[t.name]) if t.name in self.adapters else None
                      for t in self.taps]
        return self.backbone.run(x, transforms)[0]

    @torch.no_grad()
    def baseline(self, x: Tensor) -> Tensor:
        """The plain backbone's logits."""
        return self.backbone(x)

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters: those of the adapters."""
        return list(self.adapters.parameters())


def _keep_layout(adapter: nn.Module) -> Callable[[Tensor], Tensor]:
    """The adapter with its output in its input's memory layout, so the frozen layers after it run
    the same kernels as without it (timm's non-local block, e.g., returns channels-last strides)."""
    def apply(x: Tensor) -> Tensor:
        channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        return adapter(x).contiguous(memory_format=torch.channels_last if channels_last
                                     else torch.contiguous_format)
    return apply
