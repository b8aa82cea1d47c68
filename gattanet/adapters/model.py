"""A frozen backbone with one related-work add-on: a module on each of its conv taps, or (LTPA) one
head reading the conv taps and the penultimate features."""

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from gattanet.adapters.addons import ADDONS, conv_taps
from gattanet.models.backbone import Backbone
from gattanet.models.taps import Tap


def build_addon(method: str, taps: Sequence[Tap], knob) -> nn.Module:
    """The `method` add-on's modules for `taps` at `knob`: a ModuleDict keyed by conv tap name, or (a head
    method) the head itself. Bad knobs are a ValueError naming what is allowed."""
    if method not in ADDONS:
        raise ValueError(f"unknown adapter {method!r}; allowed: {', '.join(ADDONS)}")
    a = ADDONS[method]
    if a.knob_kind != "fixed" and (isinstance(knob, bool) or not isinstance(knob, (int, float)) or not knob > 0):
        raise ValueError(f"{method}: its knob ({a.knob}) must be a number > 0, got {knob!r}")
    if a.knob_kind == "rank" and not isinstance(knob, int):
        raise ValueError(f"{method}: its rank must be an integer >= 1, got {knob!r}")
    if a.head_module is not None:
        return a.head_module(list(taps), knob)
    return nn.ModuleDict({t.name: a.tap_module(t, knob) for t in conv_taps(taps)})


class AdaptedModel(nn.Module):
    """Backbone frozen as in GAttANet (no gradients, always in eval mode) + one add-on.

    The modules sit on the conv taps GAttANet modulates; module i rewrites tap i's activation through
    `backbone.run`, so later modules see the effect of earlier ones, as in a network built with them.
    A head add-on (LTPA) leaves the features alone and adds its output to the frozen logits."""

    def __init__(self, backbone: Backbone, method: str, knob):
        super().__init__()
        self.backbone, self.method, self.width = backbone, method, knob
        self.taps = backbone.taps()
        if not any(t.kind == "conv" for t in self.taps):
            raise ValueError(f"the {backbone.arch} backbone has no conv taps to put adapters on")
        self.adapters = build_addon(method, self.taps, knob)
        self.head = ADDONS[method].head_module is not None  # LTPA: one head over the taps, added to the logits
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> "AdaptedModel":
        """Only the add-on follows `mode`; the frozen backbone stays in eval (dropout off, BN stats fixed)."""
        self.training = mode
        self.adapters.train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        if self.head:
            logits, acts = self.backbone.run(x)
            local = [a for a, t in zip(acts, self.taps) if t.kind == "conv"]
            return logits + self.adapters(local, acts[-2])
        transforms = [_keep_layout(self.adapters[t.name]) if t.name in self.adapters else None
                      for t in self.taps]
        return self.backbone.run(x, transforms)[0]

    @torch.no_grad()
    def baseline(self, x: Tensor) -> Tensor:
        """The plain backbone's logits."""
        return self.backbone(x)

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters: those of the add-on."""
        return list(self.adapters.parameters())


def _keep_layout(adapter: nn.Module) -> Callable[[Tensor], Tensor]:
    """The adapter with its output in its input's memory layout, so the frozen layers after it run
    the same kernels as without it (timm's non-local block, e.g., returns channels-last strides)."""
    def apply(x: Tensor) -> Tensor:
        channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        return adapter(x).contiguous(memory_format=torch.channels_last if channels_last
                                     else torch.contiguous_format)
    return apply
