"""The paper's toy CNN (§2.0.1): three conv/ReLU/maxpool/dropout blocks, a hidden dense layer, logits."""

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from gattanet.models.backbone import Backbone


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

    def segments(self) -> list[Callable[[Tensor], Tensor]]:
        def conv_block(conv: nn.Conv2d, pool_first: bool) -> Callable[[Tensor], Tensor]:
            return lambda x: F.relu(conv(self._pool(x) if pool_first else x))

        convs = [conv_block(conv, i > 0) for i, conv in enumerate(self.convs)]
        return convs + [lambda x: F.relu(self.fc1(self._pool(x).flatten(1))),
                        lambda x: self.fc2(self.drop(x))]

    def _pool(self, x: Tensor) -> Tensor:
        return self.drop(F.max_pool2d(x, 2))
