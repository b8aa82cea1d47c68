"""The paper's toy CNN (§2.0.1): three conv/ReLU/maxpool/dropout blocks, a hidden dense layer, logits."""

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from gattanet.backbones import Backbone, Transform


class ToyCNN(Backbone):
    """conv3x3 'same' → ReLU [tap convK] → maxpool2 → dropout per width; dense hidden + ReLU [tap fc1]
    → dropout → dense num_classes [tap logits]. Defaults give the paper's 620,362 parameters."""

    arch = "toy"

    def __init__(self, in_channels: int = 3, num_classes: int = 10, widths: Sequence[int] = (32, 64, 128),
                 hidden: int = 256, dropout: float = 0.2, input_size: int = 32):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1 or hidden < 1 or in_channels < 1 or num_classes < 1:
            raise ValueError(f"toy: widths, hidden, in_channels and num_classes must be positive; got "
                             f"widths={widths}, hidden={hidden}, in_channels={in_channels}, "
                             f"num_classes={num_classes}")
        side = input_size
        for _ in widths:
            side //= 2
        if side < 1:
            raise ValueError(f"toy: input_size {input_size} is too small for {len(widths)} poolings "
                             f"(needs at least {2 ** len(widths)})")
        self.in_channels, self.num_classes, self.input_size = in_channels, num_classes, input_size
        self.widths, self.hidden, self.dropout = widths, hidden, dropout
        self.tap_names = tuple(f"conv{i + 1}" for i in range(len(widths))) + ("fc1", "logits")
        chans = (in_channels,) + widths
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(chans, chans[1:]))
        self.fc1 = nn.Linear(widths[-1] * side * side, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.drop = nn.Dropout(dropout)

    def run(self, x: Tensor, transforms: Sequence[Transform] | None = None) -> tuple[Tensor, list[Tensor]]:
        transforms = self._transforms(transforms)
        acts: list[Tensor] = []
        for conv, t in zip(self.convs, transforms):
            x = self._tap(F.relu(conv(x)), t, acts)
            x = self.drop(F.max_pool2d(x, 2))
        x = self._tap(F.relu(self.fc1(x.flatten(1))), transforms[-2], acts)
        x = self._tap(self.fc2(self.drop(x)), transforms[-1], acts)
        return x, acts
