"""Parameter counts and taps of a (backbone, dataset, attention dim) configuration, without loading weights."""

from gattanet.data.specs import get_spec
from gattanet.models.registry import ARCHS, backbone_taps, meta_backbone
from gattanet.models.spec import AttentionSpec


def describe_model(arch: str, dataset: str, attn_dim: int, kq_norm: bool = False, score_norm: bool = False) -> dict:
    """Backbone and attention parameter counts and the taps' shapes, built on the meta device (no weights)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; allowed: {', '.join(ARCHS)}")
    spec = get_spec(dataset)
    if not isinstance(attn_dim, int) or attn_dim < 1:
        raise ValueError(f"attention dim must be an integer >= 1, got {attn_dim!r}")
    taps = backbone_taps(arch, spec.num_classes, spec.channels, spec.size)
    backbone = meta_backbone(arch, spec.num_classes, spec.channels, spec.size)
    return {"backbone": arch, "dataset": dataset, "attn_dim": attn_dim,
            "input_shape": [spec.channels, spec.size, spec.size], "num_classes": spec.num_classes,
            "backbone_params": sum(p.numel() for p in backbone.parameters()),
            "attention_params": AttentionSpec(attn_dim, kq_norm=kq_norm, score_norm=score_norm).trainable_params(taps),
            "taps": [t.as_dict() for t in taps]}
