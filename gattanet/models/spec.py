"""One attention run's settings (`AttentionSpec`): the one place that names the variant fields, their allowed
values and the paper's settings (`PAPER`), and where the settings become a GAttANet, a checkpoint's meta and back,
a parameter count. (`gattanet.build.build_model` makes every model kind a stage trains over a backbone.)

Parameter count of the attention on L taps, conv taps with C_l channels, dense taps with N_l units, at d:
P = Σ_conv 2d(C_l + 1) + Σ_dense 2d N_l + L (α) [+ 2·2d per tap with kq_norm's affine BatchNorm]. The variants:
iterations T: P (the same weights at every pass); heads H: P + (H - 1)·L (W_k, W_q unchanged, split into H
heads of d/H; one α per tap and head); top-down query: P - P_q + K·d, P_q = Σ_conv d(C_l + 1) + Σ_dense d N_l
(no W_q) and K·d for E (K classes); finetune: P trainable attention parameters + the backbone's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # the model modules import this one for the paper's settings: they are imported where used
    from gattanet.models.attention import GlobalAttention
    from gattanet.models.backbone import Backbone
    from gattanet.models.gattanet import GAttANet
    from gattanet.models.taps import Tap

QUERIES = ("bottom-up", "top-down")  # where the global query comes from: the layers' queries (the paper) or the class evidence
PAPER = {"iterations": 1, "heads": 1, "query": "bottom-up", "finetune": False}  # the variant fields at the paper's
# values: one modulated pass, one head, a bottom-up query, a frozen backbone (each field's default)
META_KEYS = ("attn_dim", "dropout", "kq_norm", "score_norm", "iterations", "lesion")  # in a checkpoint's meta
OPTIONAL_META = {k: v for k, v in PAPER.items() if k not in META_KEYS}  # in meta only where not the paper's value


@dataclass(frozen=True)
class AttentionSpec:
    """The settings that make a GAttANet over a given backbone (training settings such as lr are not here).
    `lesion` is "full" (every tap modulated) or a pattern such as "cc.dd" (see gattanet.models.lesion).
    The variants beyond the paper (equations in gattanet.models.gattanet and .attention): `iterations` T
    modulated passes, `heads` H global queries, `query` "top-down", `finetune` (the backbone trains too)."""
    dim: int
    dropout: float = 0.25
    kq_norm: bool = False
    score_norm: bool = False
    iterations: int = PAPER["iterations"]
    lesion: str = "full"
    heads: int = PAPER["heads"]
    query: str = PAPER["query"]
    finetune: bool = PAPER["finetune"]

    @property
    def shares_first_pass(self) -> bool:
        """Whether gattanet.engine.fast_eval's shared evaluation computes this model: one iteration, a frozen
        backbone, and scores made of the first pass's activations alone (a bottom-up query)."""
        return self.iterations == 1 and not self.finetune and self.query == "bottom-up"

    @property
    def pattern(self) -> str | None:
        """The lesion as GAttANet takes it: "full" means no lesion (None)."""
        return None if self.lesion == "full" else self.lesion

    @property
    def label(self) -> str:
        """A short readable name, e.g. "d=16,drop=0.25,lesion=cc.dd" (keys the cost plan's figures)."""
        extra = "".join([",kq-norm" if self.kq_norm else "", ",score-norm" if self.score_norm else "",
                         f",iter={self.iterations}" if self.iterations != PAPER["iterations"] else "",
                         f",heads={self.heads}" if self.heads != PAPER["heads"] else "",
                         f",{self.query}" if self.query != PAPER["query"] else "",
                         ",finetune" if self.finetune else "",
                         f",lesion={self.lesion}" if self.pattern is not None else ""])
        return f"d={self.dim},drop={self.dropout:g}{extra}"

    def attention(self, taps: Sequence[Tap]) -> GlobalAttention:
        """A fresh attention system on `taps` (α₀ = 0, so the GAttANet starts as its backbone)."""
        from gattanet.models.attention import GlobalAttention

        return GlobalAttention(list(taps), self.dim, dropout=self.dropout, kq_norm=self.kq_norm,
                               score_norm=self.score_norm, heads=self.heads, query=self.query)

    def build(self, backbone: Backbone, lesion: str | None = None) -> GAttANet:
        """A fresh GAttANet over `backbone` (on the attention's default device: the caller places it);
        `lesion` overrides the spec's pattern."""
        from gattanet.models.gattanet import GAttANet

        return GAttANet(backbone, self.attention(backbone.taps()), lesion=self.pattern if lesion is None else lesion,
                        iterations=self.iterations, finetune=self.finetune)

    def trainable_params(self, taps: Sequence[Tap]) -> int:
        """Trainable parameters of the attention on `taps`, counted on the meta device (no memory, no RNG);
        a fine-tuned backbone's own are not in it."""
        with torch.device("meta"):
            return self.attention(taps).count_parameters()

    def meta(self) -> dict:
        """The settings as an attention checkpoint's meta records them (`from_meta` reads them back); a
        variant's key only where it is not the paper's default, so the paper's checkpoints keep their bytes."""
        return {"attn_dim": self.dim, "dropout": self.dropout, "kq_norm": self.kq_norm,
                "score_norm": self.score_norm, "iterations": self.iterations, "lesion": self.lesion} | {
                k: getattr(self, k) for k, default in OPTIONAL_META.items() if getattr(self, k) != default}

    @classmethod
    def from_meta(cls, meta: dict) -> AttentionSpec:
        """The spec a checkpoint's meta records; KeyError names a missing key."""
        return cls(meta["attn_dim"], meta["dropout"], meta["kq_norm"], meta["score_norm"], meta["iterations"],
                   meta["lesion"], **{k: meta.get(k, default) for k, default in OPTIONAL_META.items()})

    @classmethod
    def from_settings(cls, run) -> AttentionSpec:
        """The spec of an object holding an attention run's settings as attributes (attn_dim, dropout, kq_norm,
        score_norm, iterations, lesion; heads, query, finetune where it has them, else the paper's)."""
        return cls(run.attn_dim, run.dropout, run.kq_norm, run.score_norm, run.iterations, run.lesion,
                   **{k: getattr(run, k, default) for k, default in OPTIONAL_META.items()})

    @classmethod
    def of(cls, model: GAttANet) -> AttentionSpec:
        """The spec of a built model (its lesion spelt out as the full pattern when it has none)."""
        att = model.attention
        return cls(att.dim, att.dropout, att.kq_norm, att.score_norm, model.iterations, model.lesion,
                   att.heads, att.query, model.finetune)
