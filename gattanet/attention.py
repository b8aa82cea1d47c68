"""The global attention agreement system (paper §2.0.2, DESIGN.md §1, Eqs. 1-4).

Each tapped layer emits keys and queries; one global query is the mean over layers of each
layer's mean query; a location's score is the raw dot product of the global query with its key.
Options for the ResNets: `kq_norm` batch-normalises keys and queries, `score_norm` layer-normalises
each layer's score map without affine parameters (the learned α already scales each layer's map,
so a gain would be redundant, and a per-position bias would tie the parameters to one input size).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gattanet.taps import Tap


@dataclass
class AttentionState:
    """keys[i]/queries[i]: conv (B, d, H, W), dense (B, N, d); query (B, d); scores[i]: conv (B, H, W), dense (B, N)."""

    keys: list[Tensor]
    queries: list[Tensor]
    query: Tensor
    scores: list[Tensor]


class UnitProjection(nn.Module):
    """Eq. 2: unit i of a dense layer gets its own d-vector, k_i = x_i · W[i]; no bias."""

    def __init__(self, units: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(units, dim))
        nn.init.xavier_uniform_(self.weight)  # Keras' default (glorot) for a (N, d) weight

    def forward(self, x: Tensor) -> Tensor:  # (B, N) -> (B, N, d)
        return x.unsqueeze(-1) * self.weight


class UnitBatchNorm(nn.BatchNorm1d):
    """BatchNorm of the d features of (B, N, d) keys/queries, statistics over batch × units."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class TapKeysQueries(nn.Module):
    """Keys and queries of one tap: projection → optional BatchNorm → dropout, for each of the two."""

    def __init__(self, tap: Tap, dim: int, dropout: float, kq_norm: bool):
        super().__init__()
        if tap.kind == "conv":  # Eq. 1: a 1x1 convolution with bias
            self.key, self.query = nn.Conv2d(tap.channels, dim, 1), nn.Conv2d(tap.channels, dim, 1)
            norm = nn.BatchNorm2d
        elif tap.kind == "dense":
            self.key, self.query = UnitProjection(tap.channels, dim), UnitProjection(tap.channels, dim)
            norm = UnitBatchNorm
        else:
            raise ValueError(f"tap {tap.name}: kind must be 'conv' or 'dense', got {tap.kind!r}")
        self.key_norm = norm(dim) if kq_norm else nn.Identity()
        self.query_norm = norm(dim) if kq_norm else nn.Identity()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.drop(self.key_norm(self.key(x))), self.drop(self.query_norm(self.query(x)))


class GlobalAttention(nn.Module):
    """Keys, queries, the global query and the agreement scores of every tap; α (one per tap, 0 at init)."""

    def __init__(self, taps: Sequence[Tap], dim: int, dropout: float = 0.25,
                 kq_norm: bool = False, score_norm: bool = False):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"attention dim must be an integer >= 1, got {dim!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"attention dropout must be in [0, 1), got {dropout!r}")
        if not taps:
            raise ValueError("attention needs at least one tap")
        self.taps, self.dim, self.dropout = list(taps), dim, dropout
        self.kq_norm, self.score_norm = kq_norm, score_norm
        self.layers = nn.ModuleList(TapKeysQueries(t, dim, dropout, kq_norm) for t in self.taps)
        self.alpha = nn.Parameter(torch.zeros(len(self.taps)))

    def forward(self, acts: Sequence[Tensor]) -> AttentionState:
        if len(acts) != len(self.taps):
            raise ValueError(f"attention has {len(self.taps)} taps, got {len(acts)} activations")
        keys, queries, layer_queries = [], [], []
        for tap, layer, a in zip(self.taps, self.layers, acts):
            if a.dim() != (4 if tap.kind == "conv" else 2):
                raise ValueError(f"tap {tap.name} ({tap.kind}) got an activation of shape {tuple(a.shape)}")
            k, q = layer(a)
            keys.append(k)
            queries.append(q)
            layer_queries.append(q.mean(dim=(2, 3)) if tap.kind == "conv" else q.mean(dim=1))
        query = torch.stack(layer_queries).mean(dim=0)  # Eq. 3
        scores = [torch.einsum("bd,bdhw->bhw", query, k) if tap.kind == "conv"
                  else torch.einsum("bd,bnd->bn", query, k) for tap, k in zip(self.taps, keys)]  # Eq. 4
        if self.score_norm:
            scores = [F.layer_norm(s, s.shape[1:]) for s in scores]
        return AttentionState(keys, queries, query, scores)

    def count_parameters(self) -> int:
        """Trainable parameters (W_k, W_q, biases, norms' affine terms, α)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
