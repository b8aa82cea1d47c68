"""The global attention agreement system (paper §2.0.2, DESIGN.md §1, Eqs. 1-4).

Each tapped layer emits keys and queries; one global query is the mean over layers of each
layer's mean query; a location's score is the raw dot product of the global query with its key.
Options for the ResNets: `kq_norm` batch-normalises keys and queries, `score_norm` layer-normalises
each layer's score map without affine parameters (the learned α already scales each layer's map,
so a gain would be redundant, and a per-position bias would tie the parameters to one input size).

`GlobalAttention.forward` is Eqs. 1-4 as written (with `fast` off). By default it hands over to paths
that give the same numbers quicker: in training `forward_factored` (no keys or queries asked for: the
dropout masks enter matmuls with the activations) or `forward_batched` (each 1x1 convolution as one
batched matmul, a cheaper dropout mask), and `forward_folded` in eval, where nothing is random and
every step up to the scores is affine, so the global query and the scores come from the activations
directly, without per-position keys and queries. tests/test_attention_model.py checks they agree.

Two variants beyond the paper (its discussion's open questions; the defaults are the paper's and run its code):
- `heads` H: the d features of keys and queries split into H heads of d/H (so W_k, W_q keep the single-head
  run's shapes and parameter count); head h has its own global query q_h (Eq. 3 on its d/H features) and its
  own score map a_{l,h} = q_h · k_{l,h} (Eq. 4), and α gets one entry per tap and head (Eq. 5 in
  gattanet.models.gattanet sums the heads). With H = 1 every path is the paper's.
- `query` "top-down": the global query comes from the class evidence of the pass before instead of the layers'
  queries: q = Σ_c softmax(z)_c E_c (E ∈ R^{K×d}, learned, one d-vector per class; z the previous pass's
  logits), so the layers project keys only (no W_q) and the run gains K·d parameters and loses W_q's.
Both run on every fast path (tests/test_variants.py checks them against the equations as written).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gattanet.models.spec import PAPER, QUERIES
from gattanet.models.taps import Tap


@dataclass
class AttentionState:
    """keys[i]/queries[i]: conv (B, d, H, W), dense (B, N, d), None when not asked for in eval;
    query (B, d); scores[i]: conv (B, H, W), dense (B, N)."""

    keys: list[Tensor] | None
    queries: list[Tensor] | None
    query: Tensor
    scores: list[Tensor]


class PointwiseConv(nn.Conv2d):
    """Eq. 1: a 1x1 convolution with bias, computed as one batched matmul over (C, H·W): on CPU,
    forward + backward take about half the time of mkldnn's 1x1 convolution, which converts layouts."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, out, H, W)
        b, c, h, w = x.shape
        weight = self.weight.view(-1, c).expand(b, -1, -1)
        return torch.baddbmm(self.bias[:, None], weight, x.reshape(b, c, h * w)).view(b, -1, h, w)


class UnitProjection(nn.Module):
    """Eq. 2: unit i of a dense layer gets its own key vector W[i, :d] and query vector W[i, d:],
    k_i = x_i · W[i, :d]; no bias. `halves=1`: keys only, W (N, d)."""

    def __init__(self, units: int, dim: int, halves: int = 2):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(units, halves * dim))
        for half in self.weight.data.chunk(halves, dim=1):  # Keras' default (glorot) for each (N, d) weight
            nn.init.xavier_uniform_(half)

    def forward(self, x: Tensor) -> Tensor:  # (B, N) -> (B, N, 2d)
        return x.unsqueeze(-1) * self.weight


class UnitBatchNorm(nn.BatchNorm1d):
    """BatchNorm of the features of (B, N, F) keys/queries, statistics over batch × units."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def dropout_mask(shape: Sequence[int], p: float, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """A 0/1 keep mask of `shape` in `dtype`, independent per element, each kept with probability 1 - p.
    With p = m / 2^b (b ≤ 16, the smallest; else p rounded to a multiple of 2^-16), every element gets b
    random bits, drawn as b bit planes from torch's generator, and is kept where its b-bit number is ≥ m,
    computed on the planes with b bitwise operations; the one result bit per element is then unpacked
    (numpy's unpackbits on a CPU). For the paper's 0.25 (2 bits) this costs ~1 ns an element on a CPU
    core, where torch's bernoulli_ costs ~20."""
    if not 0 < p < 1:
        raise ValueError(f"a dropout mask needs 0 < p < 1, got {p!r}")
    n, bits = math.prod(shape), next((b for b in range(1, 17) if (p * 2 ** b).is_integer()), 16)
    m = min(max(round(p * 2 ** bits), 1), 2 ** bits - 1)
    planes = torch.empty(bits, -(-n // 64), dtype=torch.int64, device=device).random_(-2 ** 63, None)
    keep = None  # all ones: "≥ m" over no bits yet; then bit i, from the lowest, decides where it differs from m's
    for i in range(bits):
        if (m >> i) & 1:
            keep = planes[i] if keep is None else planes[i] & keep
        elif keep is not None:
            keep = planes[i] | keep
    packed = keep.view(torch.uint8)
    if packed.device.type == "cpu":
        unpacked = torch.from_numpy(np.unpackbits(packed.numpy(), bitorder="little"))
    else:
        unpacked = ((packed.unsqueeze(-1) >> torch.arange(8, dtype=torch.uint8, device=packed.device)) & 1).flatten()
    return unpacked[:n].to(dtype).view(tuple(shape))


def fast_dropout(x: Tensor, p: float) -> Tensor:
    """Inverted dropout of every element of `x`, with `dropout_mask`'s mask; the 1/(1-p) scale in
    float32, rounded once (4/3 is inexact in bf16)."""
    return (x * dropout_mask(x.shape, p, x.dtype, x.device)).mul_(1 / (1 - p))


class TapKeysQueries(nn.Module):
    """Keys and queries of one tap: W_k and W_q stacked in one projection (keys are its first d
    outputs, queries the last d) → optional BatchNorm (per feature, so one over 2d features is two
    over d) → dropout. `queries=False` (the top-down query): keys only, W_k alone."""

    def __init__(self, tap: Tap, dim: int, dropout: float, kq_norm: bool, queries: bool = True):
        super().__init__()
        out = 2 * dim if queries else dim
        if tap.kind == "conv":
            self.proj, norm = PointwiseConv(tap.channels, out), nn.BatchNorm2d
        elif tap.kind == "dense":
            self.proj, norm = UnitProjection(tap.channels, dim, halves=2 if queries else 1), UnitBatchNorm
        else:
            raise ValueError(f"tap {tap.name}: kind must be 'conv' or 'dense', got {tap.kind!r}")
        self.kind, self.dim, self.dropout, self.queries = tap.kind, dim, dropout, queries
        self.norm = norm(out) if kq_norm else nn.Identity()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(keys, queries) by Eq. 1 or 2 as written: conv (B, d, H, W), dense (B, N, d); queries None without W_q."""
        if self.kind == "conv":  # Eq. 1: [k_xy; q_xy] = [W_k; W_q] X_xy + [b_k; b_q], a 1x1 convolution
            kq = F.conv2d(x, self.proj.weight, self.proj.bias)
        else:  # Eq. 2: unit i has its own vectors, [k_i; q_i] = x_i · [W_k[i]; W_q[i]]
            kq = x.unsqueeze(-1) * self.proj.weight
        kq = F.dropout(self.norm(kq), self.dropout, self.training)
        return self._split(kq)

    def forward_batched(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """`forward` as training runs it: the 1x1 convolution as PointwiseConv's batched matmul, and
        fast_dropout's mask (one draw, independent per element of keys and queries)."""
        kq = self.norm(self.proj(x))
        if self.training and self.dropout > 0:
            kq = fast_dropout(kq, self.dropout)
        return self._split(kq)

    def _split(self, kq: Tensor) -> tuple[Tensor, Tensor | None]:
        if not self.queries:
            return kq, None
        return kq.split(self.dim, dim=1 if self.kind == "conv" else 2)

    def folded(self) -> tuple[Tensor, Tensor]:
        """The eval-mode map as one affine W·x + b, features first: W (2d, C) for a conv tap (per
        position), (2d, N) for a dense one (unit i: x_i · W[:, i]); an eval BatchNorm folded in.
        Without W_q, W is (d, C) or (d, N): the keys' rows alone."""
        if self.kind == "conv":
            w, b = self.proj.weight.flatten(1), self.proj.bias
        else:
            w, b = self.proj.weight.T, self.proj.weight.new_zeros(self.proj.weight.shape[1])
        if not isinstance(self.norm, nn.Identity):  # eval BatchNorm: a·(y - mean) + beta
            a = self.norm.weight / torch.sqrt(self.norm.running_var + self.norm.eps)
            w, b = a[:, None] * w, a * (b - self.norm.running_mean) + self.norm.bias
        return w, b


class GlobalAttention(nn.Module):
    """Keys, queries, the global query and the agreement scores of every tap; α (one per tap, 0 at init;
    (taps, heads) with several heads). `fast` (default True) lets `forward` hand over to `forward_batched` /
    `forward_factored` / `forward_folded`.

    `heads` H (d divisible by H): head h owns features [h·d/H, (h+1)·d/H) of every key and of the global
    query, a_{l,h} = q_h · k_{l,h}; scores[i] then gain a head axis, conv (B, H, h, w), dense (B, H, N).
    `query` "top-down": q = softmax(z) E with z the class evidence (logits) of the pass before, passed as
    `forward`'s `evidence`, E (`class_queries`) one learned d-vector per class (K classes: `classes`, by
    default the size of the tap named "logits"); the taps then project keys only."""

    def __init__(self, taps: Sequence[Tap], dim: int, dropout: float = 0.25,
                 kq_norm: bool = False, score_norm: bool = False, heads: int = PAPER["heads"], query: str = PAPER["query"],
                 classes: int | None = None):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"attention dim must be an integer >= 1, got {dim!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"attention dropout must be in [0, 1), got {dropout!r}")
        if not taps:
            raise ValueError("attention needs at least one tap")
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or dim % heads:
            raise ValueError(f"attention heads must be an integer >= 1 that divides dim = {dim} "
                             f"(each head gets dim / heads features), got {heads!r}")
        if query not in QUERIES:
            raise ValueError(f"attention query {query!r} is not allowed; allowed: {', '.join(QUERIES)}")
        self.taps, self.dim, self.dropout = list(taps), dim, dropout
        self.kq_norm, self.score_norm, self.heads, self.query = kq_norm, score_norm, heads, query
        bottom_up = query == "bottom-up"
        self.layers = nn.ModuleList(TapKeysQueries(t, dim, dropout, kq_norm, queries=bottom_up) for t in self.taps)
        self.alpha = nn.Parameter(torch.zeros(len(self.taps)) if heads == 1 else torch.zeros(len(self.taps), heads))
        if not bottom_up:
            if classes is None:
                logits = [t for t in self.taps if t.name == "logits"]
                if not logits:
                    raise ValueError("a top-down query needs the number of classes: pass `classes`, or tap the "
                                     f"logits as a tap named 'logits' (taps: {[t.name for t in self.taps]})")
                classes = logits[0].channels
            self.class_queries = nn.Parameter(torch.empty(classes, dim))  # E: row c is class c's query
            nn.init.xavier_uniform_(self.class_queries)
        self.fast = True

    def forward(self, acts: Sequence[Tensor], with_kq: bool = True, evidence: Tensor | None = None) -> AttentionState:
        """Eqs. 1-4 over the tapped activations `acts`, as written below when `fast` is off. `with_kq=False`
        lets the eval path skip the per-position keys and queries (then None), which its scores do not need.
        `evidence`: the logits of the pass that gave `acts`, which a top-down query is made of (else unused)."""
        self._check(acts)
        if self.fast:
            if not self.training:
                return self.forward_folded(acts, with_kq, evidence)
            if with_kq or self.kq_norm:
                return self.forward_batched(acts, evidence)
            return self.forward_factored(acts, evidence)
        keys, queries = [], []
        for layer, x in zip(self.layers, acts):  # Eq. 1 (conv taps) or Eq. 2 (dense taps)
            k, q = layer(x)
            keys.append(k)
            queries.append(q)
        query = self._global_query(queries, evidence)  # Eq. 3: q = mean over layers of mean over positions
        scores = [_agreement(query, k, self.heads) for k in keys]  # Eq. 4: a_xy = q · k_xy, a_i = q · k_i
        return AttentionState(keys, None if self.query == "top-down" else queries, query, self._normalise(scores))

    def forward_batched(self, acts: Sequence[Tensor], evidence: Tensor | None = None) -> AttentionState:
        """Training's path: `forward` with each tap's keys and queries from `TapKeysQueries.forward_batched`."""
        keys, queries = map(list, zip(*(layer.forward_batched(a) for layer, a in zip(self.layers, acts))))
        query = self._global_query(queries, evidence)  # Eq. 3
        scores = [_agreement(query, k, self.heads) for k in keys]  # Eq. 4
        return AttentionState(keys, None if self.query == "top-down" else queries, query, self._normalise(scores))

    def forward_factored(self, acts: Sequence[Tensor], evidence: Tensor | None = None) -> AttentionState:
        """Training's path when keys and queries are not asked for (and kq_norm is off): Eqs. 1-4 with
        dropout, each tap's masked keys and queries never materialised. A tap draws two `dropout_mask`s, for
        its keys, then its queries (keys only for a top-down query), each of the keys' shape (conv (B, d, H·W),
        dense (B, N, d)); the masked sums of Eq. 3 and Eq. 4 are then matmuls of the mask with the activations
        (`_query_masked`, `_scores_masked`; with several heads, one `_scores_masked` per head on its rows of W_k
        and of the mask), the 1/(1-p) scale applied to their small results. Without dropout in effect,
        `forward_folded`'s maps."""
        self._check(acts)
        if self.kq_norm and self.training:
            raise RuntimeError("forward_factored has no training-mode BatchNorm of keys and queries (kq_norm); "
                               "use forward_batched")
        d, p = self.dim, self.dropout
        maps = [layer.folded() for layer in self.layers]  # keys: rows [:d], queries: [d:]
        drawn = "kq" if self.query == "bottom-up" else "k"
        halves = [tuple(dropout_mask(_keys_shape(a, d), p, a.dtype, a.device) for _ in drawn) + (None,) * (2 - len(drawn))
                  if self.training and p > 0 else (None, None) for a in acts]
        if self.query == "bottom-up":
            query = torch.stack([_query_masked(a, w[d:], b[d:], mq, p)
                                 for a, (w, b), (_, mq) in zip(acts, maps, halves)]).mean(dim=0)  # Eq. 3
        else:
            query = self._global_query(None, evidence)
        scores = [self._per_head(_scores_masked, a, query, w[:d], b[:d], mk, p)  # Eq. 4
                  for a, (w, b), (mk, _) in zip(acts, maps, halves)]
        return AttentionState(None, None, query, self._normalise(scores))

    def forward_folded(self, acts: Sequence[Tensor], with_kq: bool = True,
                       evidence: Tensor | None = None) -> AttentionState:
        """Eval's path: the global query and the scores from each tap's folded affine map W·x + b
        (`TapKeysQueries.folded`), never materialising per-position keys and queries for them."""
        if self.training:
            raise RuntimeError("forward_folded holds in eval mode only (no dropout, BatchNorm running "
                               "statistics); call .eval() first")
        keys = queries = None
        if with_kq:
            keys, queries = map(list, zip(*(layer.forward_batched(a) for layer, a in zip(self.layers, acts))))
            queries = None if self.query == "top-down" else queries
        d, maps = self.dim, [layer.folded() for layer in self.layers]  # keys: rows [:d], queries: [d:]
        if self.query == "bottom-up":
            query = torch.stack([_query_folded(a, w[d:], b[d:]) for a, (w, b) in zip(acts, maps)]).mean(dim=0)
        else:
            query = self._global_query(None, evidence)
        scores = [self._per_head(_scores_folded, a, query, w[:d], b[:d]) for a, (w, b) in zip(acts, maps)]
        return AttentionState(keys, queries, query, self._normalise(scores))

    def count_parameters(self) -> int:
        """Trainable parameters (W_k, W_q, biases, norms' affine terms, α, a top-down query's E)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def class_query(self, evidence: Tensor) -> Tensor:
        """The top-down global query from class evidence `evidence` (B, K logits): q = softmax(z) E, (B, d)."""
        if evidence is None:
            raise ValueError("a top-down query is made of the class evidence of the pass before: pass its logits "
                             "as `evidence` (GAttANet.forward does)")
        if evidence.shape[1:] != self.class_queries.shape[:1]:
            raise ValueError(f"top-down evidence has shape {tuple(evidence.shape)}, expected (B, "
                             f"{self.class_queries.shape[0]}) logits")
        return torch.softmax(evidence, dim=1) @ self.class_queries  # q = Σ_c softmax(z)_c E_c

    def _global_query(self, queries: list[Tensor] | None, evidence: Tensor | None) -> Tensor:
        """Eq. 3 (bottom-up): the mean over layers of each layer's mean query; or the top-down `class_query`."""
        if self.query == "top-down":
            return self.class_query(evidence)
        return torch.stack([_mean_over_positions(q) for q in queries]).mean(dim=0)

    def _per_head(self, scores_of, x: Tensor, query: Tensor, w: Tensor, b: Tensor, *mask) -> Tensor:
        """`scores_of(x, query, w, b, *mask)` (Eq. 4 from W_k's rows w, b) for every head on its own features:
        one map for one head, else the heads' maps stacked on axis 1."""
        if self.heads == 1:
            return scores_of(x, query, w, b, *mask)
        e, conv = self.dim // self.heads, x.dim() == 4
        maps = []
        for h in range(self.heads):
            f = slice(h * e, (h + 1) * e)  # head h's features
            own = [None if m is None else (m[:, f] if conv else m[..., f]) for m in mask[:1]] + list(mask[1:])
            maps.append(scores_of(x, query[:, f], w[f], b[f], *own))
        return torch.stack(maps, dim=1)

    def _check(self, acts: Sequence[Tensor]) -> None:
        if len(acts) != len(self.taps):
            raise ValueError(f"attention has {len(self.taps)} taps, got {len(acts)} activations")
        for tap, a in zip(self.taps, acts):
            if a.dim() != (4 if tap.kind == "conv" else 2):
                raise ValueError(f"tap {tap.name} ({tap.kind}) got an activation of shape {tuple(a.shape)}")

    def _normalise(self, scores: list[Tensor]) -> list[Tensor]:
        """`score_norm`: each layer's map (each head's) standardised over its own positions (units), per image."""
        first = 1 if self.heads == 1 else 2
        return [F.layer_norm(s, s.shape[first:]) for s in scores] if self.score_norm else scores


def _agreement(query: Tensor, k: Tensor, heads: int) -> Tensor:
    """Eq. 4 from materialised keys: a_xy = q · k_xy (conv k (B, d, H, W)), a_i = q · k_i (dense k (B, N, d));
    with several heads, a_{h,xy} = q_h · k_{h,xy} on each head's d/H features, the head axis at 1."""
    if heads == 1:
        return torch.einsum("bd,bdhw->bhw", query, k) if k.dim() == 4 else torch.einsum("bd,bnd->bn", query, k)
    q = query.unflatten(1, (heads, -1))  # (B, H, d/H)
    if k.dim() == 4:
        return torch.einsum("bge,bgehw->bghw", q, k.unflatten(1, (heads, -1)))
    return torch.einsum("bge,bnge->bgn", q, k.unflatten(2, (heads, -1)))



def _mean_over_positions(q: Tensor) -> Tensor:
    return q.mean(dim=(2, 3)) if q.dim() == 4 else q.mean(dim=1)


def _query_folded(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """One layer's term of Eq. 3 without dropout: the mean over positions (units) of w·x + b, (B, d)."""
    if x.dim() == 4:
        return x.mean(dim=(2, 3)) @ w.T + b
    return x @ w.T / x.shape[1] + b


def _scores_folded(x: Tensor, query: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Eq. 4 without dropout: query · (w·x + b) at every position, as (query w) · x + query · b."""
    v, shift = query @ w, query @ b
    if x.dim() == 4:
        return torch.einsum("bc,bchw->bhw", v, x) + shift[:, None, None]
    return x * v + shift[:, None]


def _keys_shape(x: Tensor, dim: int) -> tuple[int, ...]:
    """The shape of a tap's keys (and queries) as its dropout masks lay them out: (B, d, H·W) for a conv
    tap, (B, N, d) for a dense one."""
    return (x.shape[0], dim, x.shape[2] * x.shape[3]) if x.dim() == 4 else (*x.shape, dim)


def _query_masked(x: Tensor, w: Tensor, b: Tensor, mask: Tensor | None, p: float) -> Tensor:
    """One layer's term of Eq. 3 with dropout mask `mask` (0/1, conv (B, d, H·W), dense (B, N, d)):
    mean over positions of mask ⊙ (w·x + b) / (1 - p) = (Σ_c w_jc (mask_j · X_c) + b_j Σ mask_j) / (n (1 - p)),
    the masked sums Σ_xy mask_jxy X_cxy one batched matmul; (B, d)."""
    if mask is None:
        return _query_folded(x, w, b)
    if x.dim() == 4:
        x3 = x.flatten(2)  # (B, C, HW)
        sums = torch.bmm(mask, x3.transpose(1, 2))  # (B, d, C)
        kept = mask.sum(dim=-1, dtype=torch.float32)  # (B, d), counts exact past bf16's 256
        return ((sums * w).sum(dim=-1) + kept * b) / (x3.shape[-1] * (1 - p))
    return ((x.unsqueeze(-1) * mask) * w.T).sum(dim=1) / (x.shape[1] * (1 - p))  # dense: no bias (Eq. 2)


def _scores_masked(x: Tensor, query: Tensor, w: Tensor, b: Tensor, mask: Tensor | None, p: float) -> Tensor:
    """Eq. 4 with dropout mask `mask` on the keys: a = Σ_j q_j mask_j (w_j·x + b_j) / (1 - p). A conv tap
    goes through whichever is smaller, the activation's (B, H·W, C) (Σ_c X_c Σ_j mask_j q_j w_jc) or the
    keys' (B, d, H·W); a dense one through mask ⊙ w (B, N, d)."""
    if mask is None:
        return _scores_folded(x, query, w, b)
    dtype = mask.dtype  # the activations': matmul operands must agree outside autocast
    if x.dim() == 4:
        n, c, h, wd = x.shape
        x3 = x.flatten(2)  # (B, C, HW)
        v = (query.unsqueeze(-1) * w).to(dtype)  # (B, d, C): q_j w_jc
        u = (query * b).to(dtype).unsqueeze(-1)  # (B, d, 1): q_j b_j
        if c <= w.shape[0]:
            r = torch.bmm(mask.transpose(1, 2), v)  # (B, HW, C)
            # Σ_j mask_j q_j b_j as a row vector times the mask: the mask's transpose times u would be a
            # transposed matrix-vector product, several times slower on CPU
            a = (x3.transpose(1, 2) * r).sum(dim=-1) + torch.bmm(u.transpose(1, 2), mask).squeeze(1)
        else:
            a = (mask * torch.baddbmm(u, v, x3)).sum(dim=1)
        return (a / (1 - p)).view(n, h, wd)
    # mask ⊙ w in the activations' dtype equals (mask ⊙ w) rounded to it: the mask is 0/1
    return x * torch.bmm(mask * w.T.to(dtype), query.to(dtype).unsqueeze(-1)).squeeze(-1) / (1 - p)
