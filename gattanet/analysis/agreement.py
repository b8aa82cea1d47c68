"""Agreement maps (Figure 3): per-tap attention scores of sample images, and how often the logits
layer's agreement singles out the true class."""

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from gattanet.data.loader import Loader
from gattanet.engine.fast_eval import shared_states
from gattanet.models.gattanet import GAttANet


def sample_indices(labels: Sequence[int] | np.ndarray | Tensor, per_class: int = 1,
                   seed: int = 0) -> Tensor:
    """A seeded choice of `per_class` indices (int64 tensor) of each class present in `labels`,
    ordered by class, then by index."""
    labels = torch.as_tensor(labels).cpu()
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    if labels.dim() != 1 or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {tuple(labels.shape)}")
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        if len(idx) < per_class:
            raise ValueError(f"class {int(c)} has {len(idx)} images, fewer than per_class={per_class}")
        chosen.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]].sort().values)
    return torch.cat(chosen).long()


@torch.no_grad()
def agreement_maps(model: nn.Module, x: Tensor, labels: Sequence[int] | Tensor,
                   classes: Sequence[str]) -> list[dict]:
    """Per image: {label, pred_baseline, pred_gattanet, scores}, scores[i] being tap i's agreement
    map from the last attention pass (conv: H×W nested list, dense: N list). Eval mode.

    `classes` checks that the logits have one entry per class and that the labels are in range.
    """
    labels = [int(c) for c in labels]
    if len(labels) != len(x):
        raise ValueError(f"got {len(x)} images but {len(labels)} labels")
    if any(not 0 <= c < len(classes) for c in labels):
        raise ValueError(f"labels must lie in [0, {len(classes)}), got {labels}")
    model.eval()
    logits, state = model(x, return_state=True)
    if logits.shape[1] != len(classes):
        raise ValueError(f"the model has {logits.shape[1]} outputs but there are {len(classes)} classes")
    pred_gattanet = logits.argmax(1).tolist()
    pred_baseline = model.baseline(x).argmax(1).tolist()
    scores = [s.float().cpu() for s in state.scores]
    return [{"label": labels[b], "pred_baseline": pred_baseline[b], "pred_gattanet": pred_gattanet[b],
             "scores": [s[b].tolist() for s in scores]}
            for b in range(len(x))]


def true_class_hits(scores: Tensor, y: Tensor, alpha: float | Tensor = 1.0) -> tuple[Tensor, Tensor]:
    """Per image, whether the true class's logit is the one attention enhances most in the last tap
    (the logits layer), and whether it is among the 3 most enhanced: two bool (B,) tensors on the CPU.

    Units are ranked by their modulation α·a (Eq. 5), not by the raw score a: the model is unchanged
    by (α, W_k) → (−α, −W_k), so a trained model's scores come with either sign, and only α·a says
    which units the agreement raises. With α > 0 this is the paper's "highest agreement score"."""
    if scores.dim() != 2:
        raise ValueError(f"the last tap must be the dense logits layer; its scores have shape "
                         f"{tuple(scores.shape)}")
    scores = scores * alpha
    y = y.to(scores.device)
    top3 = (scores.topk(min(3, scores.shape[1]), dim=1).indices == y[:, None]).any(1)
    return (scores.argmax(1) == y).cpu(), top3.cpu()


@torch.no_grad()
def true_class_hit_table(models: Mapping[str, GAttANet], loader: Loader) -> dict[str, np.ndarray]:
    """Over `loader.epoch(0)`, per model and image, `true_class_hits` with each model's own α of the last tap:
    {"top1": (models, N) bool, "top3": (models, N) bool}, rows in the order of `models` (eval mode, one
    backbone: one shared first pass per batch, gattanet.engine.fast_eval)."""
    top1, top3 = {name: [] for name in models}, {name: [] for name in models}
    for x, y in loader.epoch(0):
        for name, state in shared_states(models, x)[2].items():
            h1, h3 = true_class_hits(state.scores[-1], y, models[name].attention.alpha[-1].detach())
            top1[name].append(h1)
            top3[name].append(h3)
    if not any(top1.values()):
        raise ValueError("the loader yielded no images")
    return {k: np.stack([torch.cat(v[name]).numpy() for name in models]) for k, v in (("top1", top1), ("top3", top3))}
