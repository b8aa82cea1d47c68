"""`build_model`: every model kind a stage trains over a backbone (the backbone itself, a GAttANet, a related-work
adapter at GAttANet's budget, the wider toy, the from-scratch track). It sits above gattanet.models and
gattanet.adapters, since it makes models of both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from gattanet.models.backbone import Backbone
from gattanet.models.spec import AttentionSpec

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
