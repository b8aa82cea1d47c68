"""The add-on track's methods: each related-work module as its paper defines it, where it comes from
(timm's layer or gattanet.adapters.modules), its budget knob and the paper's value of it, its parameter
count as a formula (`*_params`, checked against the built module by tests/test_adapters.py), how it is
the identity at init, and the deviations the frozen-backbone protocol forces (`ADDONS`, `ADDON_DEVIATIONS`).

Widths follow the papers' ratios: one knob per method shared by every conv tap, so the layers keep the
paper's proportions. A reduction ratio r gives hidden = max(1, round(C / r)) (timm's make_divisible with
divisor 1: round half up, floor 1 — the papers define C/r with no floor; timm's default divisor 8 would
make it 8 at every toy layer at r = 16 instead of the paper's 2, 4, 8). An attention width ratio υ gives
d = N_h · max(1, round(υ·C / N_h)), a multiple of the head count N_h.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from timm.layers import EcaModule, NonLocalAttn, SEModule, make_divisible
from timm.layers.cbam import CbamModule
from torch import nn

from gattanet.adapters import modules as m
from gattanet.models.taps import Tap

GE_EXTENT = 8  # GE-θ+'s extent: the largest fixed extent of the paper (2, 4, 8 or global)
BAM_DILATION = 4
CBAM_KERNEL = 7
ECA_GAMMA, ECA_B = 2, 1
AA_HEADS = 8  # Bello et al.: N_h = 8 (fewer only "when necessary" for memory)
MHSA_HEADS = 8  # Vaswani et al.'s h = 8
GSA_HEADS = 8  # Shen et al.: 8 heads in each GSA module
# Bello et al. downsample self-attention's input "in the layers with the largest spatial dimensions": in their ImageNet
# ResNets the 28×28 stage, not the 14×14 and 7×7 ones. Here: a tap whose map side exceeds this (the toy's 32×32 tap,
# a ResNet's 56×56 and 28×28 ones) gives AA and plain MHSA the pooled map (modules.avg_pool_3x3_s2).
DOWNSAMPLE_ABOVE = 16


def reduced(channels: int, r: float) -> int:
    """The hidden width C/r of a reduction ratio r, rounded half up, at least 1."""
    if not r > 0:
        raise ValueError(f"reduction ratio must be > 0, got {r!r}")
    return int(make_divisible(channels / r, 1, round_limit=0.))


def head_width(channels: int, ratio: float, heads: int) -> int:
    """The attention width υ·C as a multiple of the head count, at least one channel per head."""
    if not ratio > 0:
        raise ValueError(f"attention width ratio must be > 0, got {ratio!r}")
    return int(make_divisible(ratio * channels, heads, round_limit=0.))


def eca_kernel(channels: int, gamma: int = ECA_GAMMA, b: int = ECA_B) -> int:
    """ECA's adaptive kernel size k = |log₂(C)/γ + b/γ|_odd (t = int(|log₂ C + b| / γ), the next odd
    number if t is even; timm also floors it at 3, which changes no width >= 8)."""
    t = int(abs(math.log2(channels) + b) / gamma)
    return max(t if t % 2 else t + 1, 3)


# --- the papers' parameter counts (C channels, H×W map, h hidden, d attention width; + 1 for a γ gate) ---

def se_params(C: int, r: float) -> int:
    """SE: W₁ (C → h) and W₂ (h → C) with biases, h = C/r: 2Ch + h + C, + γ."""
    h = reduced(C, r)
    return 2 * C * h + h + C + 1


def eca_params(C: int) -> int:
    """ECA: one 1-D kernel of k = k(C) taps, no bias: k, + γ."""
    return eca_kernel(C) + 1


def cbam_params(C: int, r: float) -> int:
    """CBAM: shared MLP C → h → C without biases (its equations have none), 7×7 conv 2 → 1 without bias
    + BN(1) (the authors' code and timm): 2Ch + 2·7² + 2, + γ."""
    h = reduced(C, r)
    return 2 * C * h + 2 * CBAM_KERNEL ** 2 + 2 + 1


def bam_params(C: int, r: float) -> int:
    """BAM: channel C → h (+ b) → BN(h) → h → C (+ b): 2Ch + 3h + C; spatial 1×1 C → h (+ b), BN(h),
    2 × (3×3 h → h (+ b), BN(h)), 1×1 h → 1 (+ b): Ch + 18h² + 10h + 1; total 3Ch + 18h² + 13h + C + 1, + γ."""
    h = reduced(C, r)
    return 3 * C * h + 18 * h * h + 13 * h + C + 1 + 1


def gather_excite_params(C: int, r: float, extent: int = GE_EXTENT) -> int:
    """GE-θ+: log₂(e) × (depthwise 3×3 without bias, BN(C)) = 11C·log₂ e; excite C → h → C with biases
    2Ch + h + C; + γ."""
    h = reduced(C, r)
    return 11 * C * round(math.log2(extent)) + 2 * C * h + h + C + 1


def non_local_params(C: int, r: float) -> int:
    """Non-local block (embedded Gaussian): θ, φ, g (C → h, with biases) 3(Ch + h), W_z (h → C, + b)
    hC + C, BN(C) 2C: 4Ch + 3h + 3C."""
    h = reduced(C, r)
    return 4 * C * h + 3 * h + 3 * C


def aa_params(C: int, H: int, W: int, ratio: float, heads: int = AA_HEADS) -> int:
    """AA: qkv 1×1 C → 2d_k + d_v (+ b), relative embeddings (2H − 1 + 2W − 1)·d_k/N_h, the folded
    output map d_v → C (+ b); d_k = d_v = d: 4Cd + 3d + (2H + 2W − 2)·d/N_h + C. H × W: the size the
    attention sees (the pooled one where the map is downsampled)."""
    d = head_width(C, ratio, heads)
    return 4 * C * d + 3 * d + (2 * H + 2 * W - 2) * (d // heads) + C


def mhsa_params(C: int, ratio: float, heads: int = MHSA_HEADS) -> int:
    """MHSA: W_Q, W_K, W_V (C → d, + b) and W_O (d → C, + b): 4Cd + 3d + C."""
    d = head_width(C, ratio, heads)
    return 4 * C * d + 3 * d + C


def gsa_params(C: int, H: int, W: int, ratio: float, heads: int = GSA_HEADS) -> int:
    """GSA: K, Q, V (C → d, no bias) + their BNs 3Cd + 6d, relative embeddings (2H − 1 + 2W − 1)·d/N_h,
    column BN 2d, output BN 2d; then W_z (d → C, no bias) + BN(C): dC + 2C;
    total 4Cd + 10d + (2H + 2W − 2)·d/N_h + 2C."""
    d = head_width(C, ratio, heads)
    return 4 * C * d + 10 * d + (2 * H + 2 * W - 2) * (d // heads) + 2 * C


def ran_mask_params(C: int, H: int, W: int, r: float) -> int:
    """Residual-Attention mask: 3L residual units (L = mask_levels(H, W): L down, L − 1 skip, 2 bottom,
    L − 1 up), each BN(C), 1×1 C → h, BN(h), 3×3 h → h, BN(h), 1×1 h → C = 2C + 2Ch + 9h² + 4h; the
    head BN(C), 1×1 C → h, BN(h), 1×1 h → C = 2C + 2Ch + 2h; + γ."""
    h, L = reduced(C, r), m.mask_levels(H, W)
    return 3 * L * (2 * C + 2 * C * h + 9 * h * h + 4 * h) + 2 * C + 2 * C * h + 2 * h + 1


def ltpa_params(local_channels: Sequence[int], D: int, K: int, rank: int) -> int:
    """Learn to Pay Attention (concat-pc): E (D → rank, no bias) D·rank; per layer s W_s (rank → C_s, + b)
    and u_s: rank·C_s + 2C_s; the classifier ΣC_s → K (+ b): K·ΣC_s + K."""
    S = sum(local_channels)
    return D * rank + rank * S + 2 * S + K * S + K


# --- the registry -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class AddOn:
    """One add-on method. `knob` is what the budget scales; `paper_knob` is the paper's value of it
    (None: the method has no free size, its own rule fixes it). `tap_module(tap, knob)` builds the module
    of one conv tap; `head_module(taps, knob)` (LTPA) builds one module over all taps instead."""
    name: str
    title: str
    source: str
    knob: str
    paper_knob: float | None
    knob_kind: str  # "reduction" (r, hidden = C/r), "ratio" (υ, d = υC per head), "rank" (an integer), "fixed"
    step: int  # the widths' granularity (the head count for attention widths, else 1)
    identity: str
    tap_module: Callable[[Tap, float], nn.Module] | None = None
    tap_formula: Callable[[Tap, float], int] | None = None
    head_module: Callable[[Sequence[Tap], int], nn.Module] | None = None
    head_formula: Callable[[Sequence[Tap], int], int] | None = None

    def widths(self, taps: Sequence[Tap], knob) -> dict[str, int]:
        """The hidden (or attention) width at each conv tap for `knob` (LTPA: its rank; ECA: its k)."""
        conv = conv_taps(taps)
        if self.knob_kind == "reduction":
            return {t.name: reduced(t.channels, knob) for t in conv}
        if self.knob_kind == "ratio":
            return {t.name: head_width(t.channels, knob, self.step) for t in conv}
        if self.knob_kind == "fixed":
            return {t.name: eca_kernel(t.channels) for t in conv}
        return {"rank": knob}

    def formula(self, taps: Sequence[Tap], knob) -> int:
        """The paper's parameter count of the method on `taps` at `knob`."""
        if self.head_formula is not None:
            return self.head_formula(taps, knob)
        return sum(self.tap_formula(t, knob) for t in conv_taps(taps))


def conv_taps(taps: Sequence[Tap]) -> list[Tap]:
    conv = [t for t in taps if t.kind == "conv"]
    if not conv:
        raise ValueError("no conv taps: the add-ons go on conv taps")
    return conv


def global_tap(taps: Sequence[Tap]) -> Tap:
    """LTPA's global feature vector g: the penultimate tap (the dense layer before the logits)."""
    if len(taps) < 2 or taps[-2].kind != "dense":
        raise ValueError("ltpa: needs a dense penultimate tap (the global feature vector g) before the logits; "
                         f"got taps {[t.name for t in taps]}")
    return taps[-2]


def _size(t: Tap) -> tuple[int, int]:
    return t.shape[1], t.shape[2]


def downsampled(t: Tap) -> bool:
    """Whether AA and MHSA attend over the pooled map at tap `t` (DOWNSAMPLE_ABOVE)."""
    return max(_size(t)) > DOWNSAMPLE_ABOVE


def attention_size(t: Tap) -> tuple[int, int]:
    """The map size self-attention sees at tap `t`: pooled where `downsampled`."""
    return m.pooled_size(_size(t)) if downsampled(t) else _size(t)


def _ltpa_module(taps: Sequence[Tap], rank: int) -> nn.Module:
    g = global_tap(taps)
    return m.PayAttentionHead([t.channels for t in conv_taps(taps)], g.channels, taps[-1].channels, rank)


def _ltpa_formula(taps: Sequence[Tap], rank: int) -> int:
    return ltpa_params([t.channels for t in conv_taps(taps)], global_tap(taps).channels, taps[-1].channels, rank)


_GATE = "x + γ·(module(x) − x), γ = 0 at init (one parameter per tap, as GAttANet's α)"
_REDUCTION = "reduction ratio r, hidden = max(1, round(C/r)) at every conv tap"
_RATIO = "attention width ratio υ = d/C, d = 8·max(1, round(υC/8)) at every conv tap"


ADDONS: dict[str, AddOn] = {a.name: a for a in [
    AddOn("se", "Squeeze-and-Excitation (Hu et al., 2018)", "timm.layers.SEModule (rd_divisor=1)", _REDUCTION, 16,
          "reduction", 1, _GATE,
          lambda t, r: m.GatedResidual(SEModule(t.channels, rd_channels=reduced(t.channels, r))),
          lambda t, r: se_params(t.channels, r)),
    AddOn("eca", "Efficient Channel Attention (Wang et al., 2020)", "timm.layers.EcaModule (adaptive k)",
          "none: k = |log₂(C)/γ + b/γ|_odd, γ = 2, b = 1 (its own size, not matched)", None, "fixed", 1, _GATE,
          lambda t, _: m.GatedResidual(EcaModule(channels=t.channels, gamma=ECA_GAMMA, beta=ECA_B)),
          lambda t, _: eca_params(t.channels)),
    AddOn("cbam", "Convolutional Block Attention Module (Woo et al., 2018)",
          "timm.layers.CbamModule (channel then 7×7 spatial)", _REDUCTION, 16, "reduction", 1, _GATE,
          lambda t, r: m.GatedResidual(CbamModule(t.channels, rd_channels=reduced(t.channels, r),
                                                           spatial_kernel_size=CBAM_KERNEL)),
          lambda t, r: cbam_params(t.channels, r)),
    AddOn("bam", "Bottleneck Attention Module (Park et al., 2018)", "own: gattanet.adapters.modules.BAM",
          _REDUCTION, 16, "reduction", 1, _GATE,
          lambda t, r: m.GatedResidual(m.BAM(t.channels, reduced(t.channels, r), BAM_DILATION)),
          lambda t, r: bam_params(t.channels, r)),
    AddOn("gather-excite", f"Gather-Excite θ+, extent {GE_EXTENT} (Hu et al., 2018)",
          "own: gattanet.adapters.modules.GatherExcite (timm's cannot be built with θ+)", _REDUCTION, 16,
          "reduction", 1, _GATE,
          lambda t, r: m.GatedResidual(m.GatherExcite(t.channels, reduced(t.channels, r), GE_EXTENT)),
          lambda t, r: gather_excite_params(t.channels, r)),
    AddOn("non-local", "Non-local block, embedded Gaussian (Wang et al., 2018)",
          "timm.layers.NonLocalAttn (use_scale=False)", "bottleneck ratio r, θ/φ/g width = max(1, round(C/r))",
          2, "reduction", 1, "z = BN(W_z y) + x with the BN's scale and shift 0 (Wang et al.; timm's init)",
          lambda t, r: NonLocalAttn(t.channels, use_scale=False, rd_channels=reduced(t.channels, r)),
          lambda t, r: non_local_params(t.channels, r)),
    AddOn("aa-conv", f"Attention augmentation, {AA_HEADS} heads, relative logits (Bello et al., 2019)",
          "timm.layers.BottleneckAttn (Bello et al.'s relative attention) + own output map",
          _RATIO + " (d_k = d_v: κ = υ)", 0.2, "ratio", AA_HEADS,
          "x + W(MHA(x)) with W (d_v → C) zero-init, weight and bias",
          lambda t, u: m.AttentionAugmentation(t.channels, head_width(t.channels, u, AA_HEADS), _size(t), AA_HEADS,
                                               downsampled(t)),
          lambda t, u: aa_params(t.channels, *attention_size(t), u)),
    AddOn("mhsa", f"Multi-head self-attention, {MHSA_HEADS} heads (Vaswani et al., 2017)",
          "own: gattanet.adapters.modules.MultiHeadSelfAttention (torch's scaled_dot_product_attention)",
          _RATIO, 1.0, "ratio", MHSA_HEADS, "x + W_O(MHSA(x)) with W_O zero-init, weight and bias",
          lambda t, u: m.MultiHeadSelfAttention(t.channels, head_width(t.channels, u, MHSA_HEADS), MHSA_HEADS,
                                                downsampled(t)),
          lambda t, u: mhsa_params(t.channels, u)),
    AddOn("gsa", f"Global self-attention, {GSA_HEADS} heads, with its batch norms (Shen et al., 2020)",
          "own: gattanet.adapters.modules.GlobalSelfAttention", _RATIO, 1.0, "ratio", GSA_HEADS,
          "x + BN_z(W_z ReLU(BN(GSA(x)))) with BN_z's scale and shift 0",
          lambda t, u: m.GlobalSelfAttention(t.channels, head_width(t.channels, u, GSA_HEADS), _size(t), GSA_HEADS),
          lambda t, u: gsa_params(t.channels, *_size(t), u)),
    AddOn("ran-mask", "Residual Attention Network's mask branch, (1 + M(x))·x (Wang et al., 2017)",
          "own: gattanet.adapters.modules.ResidualAttentionMask",
          "reduction ratio r of its residual units and head, hidden = max(1, round(C/r))", 4, "reduction", 1,
          _GATE, lambda t, r: m.GatedResidual(m.ResidualAttentionMask(t.channels, reduced(t.channels, r),
                                                                        m.mask_levels(*_size(t)))),
          lambda t, r: ran_mask_params(t.channels, *_size(t), r)),
    AddOn("ltpa", "Learn to Pay Attention, concat-pc (Jetley et al., 2018)",
          "own: gattanet.adapters.modules.PayAttentionHead",
          "rank of g's embedding (g → rank → C_s per layer)", None, "rank", 1,
          "frozen logits + a zero-init classifier (weight and bias) on the attended features",
          head_module=_ltpa_module, head_formula=_ltpa_formula),
]}

UNMATCHABLE = tuple(a.name for a in ADDONS.values() if a.knob_kind == "fixed")

ADDON_DEVIATIONS: dict[str, tuple[str, ...]] = {
    "*": ("The backbone is frozen and pretrained (GAttANet's protocol): every module is added after a tapped "
          "conv layer's output (after its ReLU, as GAttANet modulates it), on every conv tap, and trained alone; "
          "the papers train it jointly with the network, inside each block.",
          "Every module is made the identity at init (see each method's identity rule), so training starts "
          "at the frozen backbone's accuracy; the papers initialise their modules as ordinary layers.",
          "The module's width is set by GAttANet's parameter budget through one knob per method "
          "(gattanet.adapters.budget.MATCHING_RULE), not by the paper's value of that knob, which is "
          "recorded beside it."),
    "se": (),
    "eca": ("None forced: ECA has no width to scale, so it runs at its own size, far below the budget.",),
    "cbam": (),
    "bam": ("BAM sits on every conv tap (the paper puts it only at the stage boundaries, the 'bottlenecks').",
            "The two branches are combined as σ(a' ⊗ A') (004 §5 and the authors' code); the BAM paper's "
            "Eq. 2 writes σ(M_c + M_s)."),
    "gather-excite": (),
    "non-local": (),
    "aa-conv": ("A frozen conv cannot be narrowed to C − d_v output channels to make room for the attention "
                "channels, nor can the frozen next layer read more than C: the d_v attention channels are "
                "mapped into the C channels by a zero-init 1×1 (W_O folded into it) and added to the full "
                "conv's output instead of concatenated.",
                "On maps of side above 16 (the toy's 32×32 tap) the attention reads the map average-pooled 3×3 "
                "with stride 2 and its output is upsampled bilinearly: the paper's remedy on the largest maps of "
                "its ImageNet networks (their 28×28 stage), for time here; on 32×32 CIFAR images the paper does "
                "not downsample. It cuts the attention over the toy's first tap from 1,024 positions to 256."),
    "mhsa": ("On maps of side above 16 (the toy's 32×32 tap) the attention reads the map average-pooled 3×3 with "
             "stride 2 and its output is upsampled bilinearly before W_O: AA's rule (Bello et al.) applied to "
             "the plain self-attention, which has none of its own, for time (1,024 positions to 256).",),
    "gsa": ("GSA replaces a 3×3 conv in the paper; here it is added beside the frozen conv, its output taken "
            "through the rest of GSA-ResNet's bottleneck (BN, ReLU, 1×1 to C, BN) back into C channels.",),
    "ran-mask": ("The trunk branch T(x) is the frozen layer's output itself (the paper trains a trunk of residual "
                 "units); only the mask branch M trains.",
                 "The mask head's hidden width is C/r like its residual units (the paper's is C: two C → C 1×1 "
                 "convs, 2C² parameters, alone above the budget at the toy's 128-channel tap).",
                 "The mask pools while the map's side stays >= 4, at most 3 times (the paper's ImageNet masks "
                 "go down to 7×7: 3, 2, 1 poolings at 56, 28, 14)."),
    "ltpa": ("The global vector g is the frozen penultimate dense tap (the toy's fc1, the ResNets' avgpool).",
             "The paper's classifier reads only the attended features g_a (it replaces the network's "
             "classifier); here its zero-init output is added to the frozen logits.",
             "g's per-layer downscaling W_s (D → C_s, the paper's single linear layer) is factored through a "
             "shared rank-d embedding (g → d → C_s, still linear), d the budget knob: the full D × ΣC_s map "
             "alone is above GAttANet's budget (on the toy, 256 × 224 weights against 15,781 at d = 16).",
             "Local features come from every conv tap (the paper uses three late layers; the toy has three)."),
}
