"""Evaluation that shares work, beside `GAttANet.forward` (tests check they give the same logits).

GAttANet's first pass is the plain backbone, so the baseline's logits come free with it, and
every GAttANet on that backbone (several seeds, several lesion patterns) reuses the pass and the
attention scores computed from it: n models and the baseline cost 1 + n backbone passes, not 2n + 1.
A second pass is also the first one up to its first modulated tap, so it starts there from the first
pass's activation (a pattern such as '..c..' skips conv1 and conv2). Valid for one attention
iteration in eval mode, the setting of every reported number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from gattanet.models.attention import AttentionState
from gattanet.models.lesion import parse_lesion
from gattanet.models.gattanet import GAttANet


def _shared_backbone(models: Mapping[str, GAttANet]):
    if not models:
        raise ValueError("no models to evaluate")
    backbone = next(iter(models.values())).backbone
    for name, m in models.items():
        if m.backbone is not backbone:
            raise ValueError(f"model {name!r} has its own backbone: shared evaluation needs every model "
                             "built on the same backbone object")
        if m.iterations != 1:
            raise ValueError(f"model {name!r} runs {m.iterations} attention iterations; the shared "
                             "first pass holds for 1 only (use the model's own forward)")
        if m.training:
            raise ValueError(f"model {name!r} is in training mode; call .eval() first")
    return backbone


@torch.no_grad()
def shared_states(models: Mapping[str, GAttANet], x: Tensor) -> tuple[Tensor, list[Tensor], dict[str, AttentionState]]:
    """The first pass over `x` (logits, tapped activations) and each model's attention state from it
    (global query and scores; no per-position keys and queries)."""
    backbone = _shared_backbone(models)
    logits, acts = backbone.run(x)
    return logits, acts, {name: m.attention(acts, with_kq=False) for name, m in models.items()}


@torch.no_grad()
def shared_logits(models: Mapping[str, GAttANet], x: Tensor,
                  lesions: Sequence[str] | None = None) -> dict[str, Tensor]:
    """{"baseline": backbone logits, name: GAttANet logits} from one first pass over `x`.

    With `lesions`, every model is also run under each pattern: keys "name:pattern". An
    all-'.' pattern is the baseline itself and costs no pass.
    """
    logits, acts, states = shared_states(models, x)
    out = {"baseline": logits}
    for name, model in models.items():
        state, backbone = states[name], model.backbone
        runs = {name: model.lesion} | {f"{name}:{p}": p for p in (lesions or ())}
        for key, pattern in runs.items():
            modulated = parse_lesion(pattern, model.taps)
            if not any(modulated):
                out[key] = logits
                continue
            first = modulated.index(True)  # the second pass equals the first up to here: start from its activation
            transforms = [model._modulation(i, s, inplace=i > first) if on else None
                          for i, (s, on) in enumerate(zip(state.scores, modulated))]
            out[key] = backbone.resume(first, acts[first], transforms)
    return out
