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


def rank_auc(values: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Per row of `values` (N, P), the probability that an element marked `positive` exceeds one marked `negative`
    (bool masks of the same shape; ties count half): the Mann-Whitney AUC, 0.5 when the values do not tell the two
    apart; nan for a row where either set is empty."""
    out = np.full(len(values), np.nan)
    for i, (v, pos, neg) in enumerate(zip(values, positive, negative)):
        a, b = v[pos], np.sort(v[neg])
        if len(a) and len(b):  # below + half the ties = (below + up to) / 2, per positive element
            out[i] = (np.searchsorted(b, a, "left") + np.searchsorted(b, a, "right")).sum() / (2 * len(a) * len(b))
    return out


def conv_gains(model: GAttANet, scores: Sequence[Tensor]) -> list[Tensor]:
    """α_l · a_l (Σ_h α_{l,h} a_{l,h} with heads) of each conv tap: what Eq. 5 multiplies its activations by,
    less 1, (B, h, w) float32 on the CPU; dense taps left out."""
    alpha = model.attention.alpha.detach().float()
    out = []
    for tap, a, s in zip(model.taps, alpha, scores):
        if tap.kind == "conv":
            s = s.float()
            out.append((torch.einsum("bghw,g->bhw", s, a) if s.dim() == 4 else a * s).cpu())
    return out


@torch.no_grad()
def where_gain_lies(models: Mapping[str, GAttANet], loader: Loader, regions: np.ndarray,
                    positive: int, negatives: Mapping[str, int]) -> dict:
    """Whether the agreement raises one region of the image over others. `regions` (N, S, S) labels each pixel of
    the N images `loader.epoch(0)` yields, in order. Per model, conv tap and image, the AUC (`rank_auc`) of the
    tap's gain α·a (`conv_gains`, each cell spread over the S×S pixels it covers) separating the pixels labelled
    `positive` from those labelled each of `negatives` (name -> label): {"taps": conv tap names,
    name: (models, taps, N) array per negative}, rows in the order of `models`."""
    first = next(iter(models.values()))
    taps = [t.name for t in first.taps if t.kind == "conv"]
    aucs = {name: np.full((len(models), len(taps), len(regions)), np.nan) for name in negatives}
    start = 0
    for x, _y in loader.epoch(0):
        labels = regions[start:start + len(x)]
        if len(labels) != len(x):
            raise ValueError(f"the loader yields more images than the {len(regions)} that `regions` labels")
        size = labels.shape[-1]
        flat = labels.reshape(len(x), -1)
        for m, (name, state) in enumerate(shared_states(models, x)[2].items()):
            for t, gain in enumerate(conv_gains(models[name], state.scores)):
                if size % gain.shape[-1] or size % gain.shape[-2]:
                    raise ValueError(f"tap {taps[t]}'s {tuple(gain.shape[1:])} map does not tile the {size}×{size} image")
                spread = gain.repeat_interleave(size // gain.shape[-2], 1).repeat_interleave(size // gain.shape[-1], 2)
                values = spread.reshape(len(x), -1).numpy()
                for neg_name, neg in negatives.items():
                    aucs[neg_name][m, t, start:start + len(x)] = rank_auc(values, flat == positive, flat == neg)
        start += len(x)
    if start != len(regions):
        raise ValueError(f"the loader yielded {start} images, `regions` labels {len(regions)}")
    return {"taps": taps, **aucs}


def where_estimates(table: dict) -> dict:
    """`where_gain_lies`' table as intervals: per comparison and tap, the mean AUC over seeds and images with its
    CI (gattanet.analysis.stats.effect_ci: seeds and images both random), on the images where both regions
    exist (`n`, the same for every model and tap)."""
    from gattanet.analysis.stats import effect_ci

    out = {"taps": list(table["taps"])}
    for name, aucs in table.items():
        if name == "taps":
            continue
        keep = ~np.isnan(aucs).any(axis=(0, 1))
        out[name] = {"n": int(keep.sum()),
                     "auc": [effect_ci([(1.0, aucs[:, t][:, keep])]).as_dict() for t in range(aucs.shape[1])]}
    return out
