"""The controls for "is the gain attention's, or any extra training's?" on a frozen backbone: a head
recalibrated at no more trainable parameters than GAttANet's, and the backbone itself trained on.

Heads read the backbone's last two taps (the penultimate dense activation h and the logits z = W h + b
in eval mode, for the toy CNN and the ResNets alike), so they share its frozen first pass:
- `vector-scaling`: z ⊙ s + t, a per-class scale and bias (2K parameters; Guo et al. 2017). Temperature
  scaling, z / T, is left out: it never changes the top-1 class, so its gain is zero by construction.
- `logits`: W and b fine-tuned from the backbone's values (N·K + K).
- `residual-head`: the logits layer fine-tuned on h + B·relu(A·h), a bottleneck of the rank that
  fits the budget (B starts at 0, so it starts as the baseline).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from gattanet.models.backbone import Backbone

HEADS = ("vector-scaling", "logits", "residual-head")


def logits_layer(backbone: Backbone) -> nn.Linear:
    """The backbone's last linear layer, the one that maps its penultimate tap to the logits."""
    taps = backbone.taps()
    if len(taps) < 2 or taps[-2].kind != "dense":
        raise ValueError(f"the {backbone.arch} backbone's tap before the logits is not dense: no head to recalibrate")
    n = taps[-2].shape[0]
    found = [m for m in backbone.modules()
             if isinstance(m, nn.Linear) and m.in_features == n and m.out_features == backbone.num_classes]
    if not found:
        raise ValueError(f"the {backbone.arch} backbone has no linear layer {n} → {backbone.num_classes}")
    return found[-1]


def head_params(kind: str, features: int, classes: int, rank: int = 0) -> int:
    """Trainable parameters of head `kind` on `features` penultimate units and `classes` logits."""
    if kind == "vector-scaling":
        return 2 * classes
    if kind == "logits":
        return features * classes + classes
    if kind == "residual-head":
        return features * classes + classes + rank * (2 * features + 1)
    raise ValueError(f"head {kind!r} is not known; allowed: {', '.join(HEADS)}")


def residual_rank(features: int, classes: int, budget: int) -> int:
    """The largest bottleneck rank whose residual head has at most `budget` parameters."""
    rank = (budget - head_params("logits", features, classes)) // (2 * features + 1)
    if rank < 1:
        raise ValueError(f"a residual head on {features} units needs at least "
                         f"{head_params('residual-head', features, classes, 1):,} parameters; the budget is {budget:,}")
    return rank


class HeadControl(nn.Module):
    """Frozen backbone (no gradients, always in eval mode, shareable between heads) + a trainable head."""

    def __init__(self, backbone: Backbone, kind: str, budget: int | None = None):
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"head {kind!r} is not known; allowed: {', '.join(HEADS)}")
        self.backbone, self.kind, self.rank = backbone, kind, 0
        for p in backbone.parameters():
            p.requires_grad_(False)
        layer = logits_layer(backbone)
        features, classes = layer.in_features, layer.out_features
        if kind == "vector-scaling":
            self.scale = nn.Parameter(torch.ones(classes))
            self.shift = nn.Parameter(torch.zeros(classes))
        else:
            self.linear = copy.deepcopy(layer).requires_grad_(True)
        if kind == "residual-head":
            if budget is None:
                raise ValueError("a residual head needs a parameter budget to choose its rank")
            self.rank = residual_rank(features, classes, budget)
            self.down = nn.Linear(features, self.rank)
            self.up = nn.Linear(self.rank, features, bias=False)
            nn.init.zeros_(self.up.weight)
        if budget is not None and self.n_params() > budget:
            raise ValueError(f"head {kind!r} has {self.n_params():,} parameters, over the budget of {budget:,}")
        self.train(False)

    def train(self, mode: bool = True) -> "HeadControl":
        """Only the head follows `mode`; the frozen backbone stays in eval (dropout off, BN stats fixed)."""
        self.training = mode
        self.backbone.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            logits, acts = self.backbone.run(x)
        if self.kind == "vector-scaling":
            return logits * self.scale + self.shift
        h = acts[-2]
        if self.kind == "residual-head":
            h = h + self.up(torch.relu(self.down(h)))
        return self.linear(h)

    def head_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters: the head's alone."""
        return [p for p in self.parameters() if p.requires_grad]

    def n_params(self) -> int:
        return sum(p.numel() for p in self.head_parameters())


def trained_on(backbone: Backbone) -> Backbone:
    """A copy of the backbone with every weight trainable: the "more training" control, which goes on
    training the pretrained network itself from its checkpoint."""
    copied = copy.deepcopy(backbone)
    for p in copied.parameters():
        p.requires_grad_(True)
    return copied.train()
