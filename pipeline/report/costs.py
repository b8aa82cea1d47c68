"""Multiply-adds per image of the related-work methods a profile lists and of their backbone, counted on models
built as the stages build them (the count is the architecture's, so no checkpoint is read). Built here, not through
the plan's cost model (pipeline/work.py): no stage may depend on how the plan counts."""

import torch

from gattanet.cost.bench import forward_macs
from gattanet.data.specs import get_spec
from gattanet.models.registry import build_backbone
from gattanet.build import build_model
from gattanet.models.spec import AttentionSpec
from pipeline.config import Params


def baselines_macs(params: Params) -> dict[str, float]:
    """{method: multiply-adds per image} for every method of `baselines.methods`, and "backbone": the frozen
    backbone's (the add-on track's reference) or the plain toy's (the from-scratch track's); {} when none is listed.
    Fresh weights on the CPU; the global RNG is left as it was."""
    cfg = params.baselines
    if not cfg.methods:
        return {}
    run = params.attention[cfg.run]
    spec = get_spec(run.dataset)
    attn = AttentionSpec.from_settings(run)
    x = torch.rand(2, spec.channels, spec.size, spec.size)
    with torch.random.fork_rng(devices=[]):
        backbone = build_backbone(params.backbones[cfg.backbone].arch, spec.num_classes, spec.channels,
                                  input_size=spec.size).eval()
        macs = {"backbone": forward_macs(backbone, x)}
        for m in cfg.methods:
            macs[m] = forward_macs(build_model(m, backbone, attn).model.eval(), x)
    return macs
