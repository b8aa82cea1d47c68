"""One attention run's settings (`AttentionSpec`): the one place they become a GAttANet, a checkpoint's
meta and back, a parameter count; and `build_model`, every model kind a stage trains over a backbone.

Parameter count of the attention on L taps, conv taps with C_l channels, dense taps with N_l units, at d:
P = Σ_conv 2d(C_l + 1) + Σ_dense 2d N_l + L (α) [+ 2·2d per tap with kq_norm's affine BatchNorm]. The variants:
iterations T: P (the same weights at every pass); heads H: P + (H - 1)·L (W_k, W_q unchanged, split into H
heads of d/H; one α per tap and head); top-down query: P - P_q + K·d, P_q = Σ_conv d(C_l + 1) + Σ_dense d N_l
(no W_q) and K·d for E (K classes); finetune: P trainable attention parameters + the backbone's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from gattanet.models.attention import GlobalAttention
from gattanet.models.backbone import Backbone
from gattanet.models.gattanet import GAttANet
from gattanet.models.taps import Tap

META_KEYS = ("attn_dim", "dropout", "kq_norm", "score_norm", "iterations", "lesion")  # in a checkpoint's meta
VARIANT_KEYS = {"heads": 1, "query": "bottom-up", "finetune": False}  # in meta only where not the paper's default


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
    iterations: int = 1
    lesion: str = "full"
    heads: int = 1
    query: str = "bottom-up"
    finetune: bool = False

    @property
    def pattern(self) -> str | None:
        """The lesion as GAttANet takes it: "full" means no lesion (None)."""
        return None if self.lesion == "full" else self.lesion

    @property
    def label(self) -> str:
        """A short readable name, e.g. "d=16,drop=0.25,lesion=cc.dd" (keys the cost plan's figures)."""
        extra = "".join([",kq-norm" if self.kq_norm else "", ",score-norm" if self.score_norm else "",
                         f",iter={self.iterations}" if self.iterations != 1 else "",
                         f",heads={self.heads}" if self.heads != 1 else "",
                         f",{self.query}" if self.query != "bottom-up" else "",
                         ",finetune" if self.finetune else "",
                         f",lesion={self.lesion}" if self.pattern is not None else ""])
        return f"d={self.dim},drop={self.dropout:g}{extra}"

    def attention(self, taps: Sequence[Tap]) -> GlobalAttention:
        """A fresh attention system on `taps` (α₀ = 0, so the GAttANet starts as its backbone)."""
        return GlobalAttention(list(taps), self.dim, dropout=self.dropout, kq_norm=self.kq_norm,
                               score_norm=self.score_norm, heads=self.heads, query=self.query)

    def build(self, backbone: Backbone, lesion: str | None = None) -> GAttANet:
        """A fresh GAttANet over `backbone` (on the attention's default device: the caller places it);
        `lesion` overrides the spec's pattern."""
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
                k: getattr(self, k) for k, default in VARIANT_KEYS.items() if getattr(self, k) != default}

    @classmethod
    def from_meta(cls, meta: dict) -> AttentionSpec:
        """The spec a checkpoint's meta records; KeyError names a missing key."""
        return cls(meta["attn_dim"], meta["dropout"], meta["kq_norm"], meta["score_norm"], meta["iterations"],
                   meta["lesion"], **{k: meta.get(k, default) for k, default in VARIANT_KEYS.items()})

    @classmethod
    def from_settings(cls, run) -> AttentionSpec:
        """The spec of an object holding an attention run's settings as attributes (attn_dim, dropout, kq_norm,
        score_norm, iterations, lesion; heads, query, finetune where it has them, else the paper's)."""
        return cls(run.attn_dim, run.dropout, run.kq_norm, run.score_norm, run.iterations, run.lesion,
                   **{k: getattr(run, k, default) for k, default in VARIANT_KEYS.items()})

    @classmethod
    def of(cls, model: GAttANet) -> AttentionSpec:
        """The spec of a built model (its lesion spelt out as the full pattern when it has none)."""
        att = model.attention
        return cls(att.dim, att.dropout, att.kq_norm, att.score_norm, model.iterations, model.lesion,
                   att.heads, att.query, model.finetune)


@dataclass
class Built:
    """A model `build_model` made: the module, what trains, and its size where it was matched
    (an adapter's width, the wider toy's {"widths", "hidden"}; None for GAttANet and a backbone)."""
    model: nn.Module
    trainable: list[nn.Parameter]
    width: int | dict | None = None


def build_model(kind: str, backbone: Backbone, attn: AttentionSpec | None = None,
                budget: int | None = None) -> Built:
    """A model of `kind` as the stages train it (pretrain, train-attn, baselines), unplaced: "backbone"
    (`backbone` itself), "gattanet" (`attn` over it), "wider-toy" (a fresh toy backbone whose total size is
    `backbone` + `budget`), a related-work adapter ("se", ...) on it matched to `budget` trainable
    parameters (`budget` defaults to the GAttANet of `attn` on `backbone`), or a from-scratch model of
    FROM_SCRATCH at the toy `backbone`'s total size (its weights unused: only its shape)."""
    if kind == "backbone":
        return Built(backbone, list(backbone.parameters()))
    if attn is None:
        raise ValueError(f"a {kind} model needs its attention settings (attn)")
    if kind == "gattanet":
        model = attn.build(backbone)
        return Built(model, model.attention_parameters() + model.backbone_parameters())
    if kind in FROM_SCRATCH:
        return _from_scratch(kind, backbone, attn)
    budget = attn.trainable_params(backbone.taps()) if budget is None else budget
    if kind == "wider-toy":
        from gattanet.adapters.budget import wider_toy_widths
        from gattanet.models.registry import build_backbone

        total = sum(p.numel() for p in backbone.parameters()) + budget
        widths, hidden, _ = wider_toy_widths(total, backbone.in_channels, backbone.num_classes, backbone.input_size)
        model = build_backbone("toy", backbone.num_classes, backbone.in_channels, widths=widths, hidden=hidden,
                               input_size=backbone.input_size)
        return Built(model, list(model.parameters()), {"widths": list(widths), "hidden": hidden})
    from gattanet.adapters.budget import match_width
    from gattanet.adapters.model import AdaptedModel

    width, _ = match_width(kind, backbone.taps(), budget)
    model = AdaptedModel(backbone, kind, width)
    return Built(model, model.adapter_parameters(), width)


FROM_SCRATCH = ("toy-scratch", "gattanet-scratch", "sk", "splat", "condconv", "dynconv", "ram")  # the from-scratch track


def _from_scratch(kind: str, backbone: Backbone, attn: AttentionSpec) -> Built:
    """A fresh network in the toy backbone's place, every weight trained: the plain toy ("toy-scratch"), the toy
    with GAttANet trained jointly with it ("gattanet-scratch"), or the toy with its convs replaced by a
    related-work layer (gattanet.adapters.scratch.SCRATCH), or the recurrent attention model ("ram",
    gattanet.adapters.ram), each at the plain toy's total parameter count."""
    from gattanet.models.registry import build_backbone

    if backbone.arch != "toy":
        raise ValueError(f"the from-scratch track replaces the toy CNN; got a {backbone.arch} backbone")
    shape = (backbone.num_classes, backbone.in_channels)
    if kind in ("toy-scratch", "gattanet-scratch"):  # the backbone's own shape, fresh weights
        toy = build_backbone("toy", *shape, input_size=backbone.input_size, widths=backbone.widths,
                             hidden=backbone.hidden, dropout=backbone.dropout)
        if kind == "toy-scratch":
            return Built(toy, list(toy.parameters()))
        model = replace(attn, finetune=True).build(toy)  # finetune: the backbone trains (in train mode) too
        return Built(model, model.attention_parameters() + model.backbone_parameters())
    total = sum(p.numel() for p in backbone.parameters())  # the toy it replaces, counted
    if kind == "ram":
        from gattanet.adapters.ram import build_ram

        ram = build_ram(backbone.in_channels, backbone.num_classes, total)
        return Built(ram, list(ram.parameters()),
                     {"glimpse_hidden": ram.glimpse_hidden, "core_hidden": ram.core_hidden})
    from gattanet.adapters.scratch import build_scratch

    model = build_scratch(kind, backbone.in_channels, backbone.num_classes, backbone.input_size, total,
                          dropout=backbone.dropout)
    return Built(model, list(model.parameters()), {"widths": list(model.widths), "hidden": model.hidden})
