"""The from-scratch track: the related-work layers that replace a convolution (SK, Split Attention,
CondConv, Dynamic Convolution), each put in place of the toy CNN's 3×3 convs (`ScratchToy`), with the
toy's widths scaled by one factor so that its total parameter count is the plain toy's (`scratch_widths`,
the wider toy's rule), to be trained from scratch with the backbone's protocol.

`SCRATCH` gives each method's paper, its layer (timm's where timm has one), its parameter count as a
formula of (C_in, C_out) (`*_params`, checked against the built layer by tests/test_scratch.py) and,
in `SCRATCH_DEVIATIONS`, what the toy forces. Recurrent Models of Visual Attention (Mnih et al., 2014) replaces
the whole network too but is not here: its glimpse policy trains by REINFORCE, a loss the training loop
does not have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import torch
from timm.layers import CondConv2d, SelectiveKernel, SplitAttn
from torch import Tensor, nn

from gattanet.adapters.addons import reduced
from gattanet.adapters.budget import TOY_HIDDEN, TOY_WIDTHS, check_target, closest
from gattanet.models.toy import ToyCNN

KERNEL = 3  # the toy's kernel: every method's convs are 3×3, stride 1, 'same'
SK_KERNELS = [3, 5]  # SKNet's two branches; the 5×5 one is a 3×3 with dilation 2 (keep_3x3)
SK_REDUCTION, SK_MIN_WIDTH = 16, 32  # SKNet: d = max(C/r, L), r = 16, L = 32
SPLAT_RADIX, SPLAT_CARDINALITY = 2, 1  # ResNeSt's default "2s1x"
SPLAT_REDUCTION, SPLAT_MIN_WIDTH = 4, 32  # ResNeSt's code: attention width max(C_in·R/4, 32)
CONDCONV_EXPERTS = 8  # CondConv's main setting (the CondConv-MobileNetV2 that DY-CNN's Table compares to)
DYNCONV_KERNELS, DYNCONV_REDUCTION = 4, 4  # DY-CNN: K = 4 kernels, its first FC reduces by 4
DYNCONV_TAU_START, DYNCONV_TAU_END, DYNCONV_TAU_EPOCHS = 30.0, 1.0, 10  # DY-CNN: τ 30 → 1 in 10 epochs


# --- the layers ------------------------------------------------------------------------------------

class RoutedConv2d(nn.Module):
    """A 3×3 'same' conv whose kernel and bias are mixed per image from K experts, W = Σ_k a_k W_k,
    b = Σ_k a_k b_k, the weights a = router(GAP(x)) (CondConv, DynConv; timm's CondConv2d mixes)."""

    def __init__(self, in_channels: int, out_channels: int, experts: int, router: nn.Module):
        super().__init__()
        self.conv = CondConv2d(in_channels, out_channels, KERNEL, padding=KERNEL // 2, bias=True,
                               num_experts=experts)
        self.router = router

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x, self.router(x.mean((2, 3))))


class SigmoidRouter(nn.Module):
    """CondConv's routing function r(x) = σ(GAP(x)·R + b), R: C_in → K (each expert weighted on its own)."""

    def __init__(self, in_channels: int, experts: int):
        super().__init__()
        self.fc = nn.Linear(in_channels, experts)

    def forward(self, s: Tensor) -> Tensor:
        return torch.sigmoid(self.fc(s))


class SoftmaxRouter(nn.Module):
    """DynConv's kernel attention π(x) = softmax(FC₂(ReLU(FC₁(GAP(x)))) / τ), FC₁: C_in → h, FC₂: h → K:
    Σ_k π_k = 1. `temperature` τ is a plain attribute (fixed: see SCRATCH_DEVIATIONS["dynconv"])."""

    def __init__(self, in_channels: int, hidden: int, kernels: int, temperature: float = DYNCONV_TAU_END):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(in_channels, hidden), nn.Linear(hidden, kernels)
        self.temperature = float(temperature)

    def forward(self, s: Tensor) -> Tensor:
        return torch.softmax(self.fc2(torch.relu(self.fc1(s))) / self.temperature, dim=-1)


def sk_width(c_out: int) -> int:
    """SKNet's fuse width d = max(C/r, L)."""
    return max(c_out // SK_REDUCTION, SK_MIN_WIDTH)


def splat_width(c_in: int) -> int:
    """ResNeSt's attention width max(C_in·R // 4, 32) (its code's inter_channels)."""
    return max(c_in * SPLAT_RADIX // SPLAT_REDUCTION, SPLAT_MIN_WIDTH)


def dynconv_width(c_in: int) -> int:
    """DynConv's attention hidden width C_in/4, rounded half up, at least K: a narrower one (one unit on
    a 1- or 3-channel image) can go dead under its ReLU and freeze π for good."""
    return max(reduced(c_in, DYNCONV_REDUCTION), DYNCONV_KERNELS)


def plain_conv(c_in: int, c_out: int) -> nn.Module:
    """The toy's own layer: 3×3 'same' conv with bias."""
    return nn.Conv2d(c_in, c_out, KERNEL, padding=KERNEL // 2)


def sk_layer(c_in: int, c_out: int) -> nn.Module:
    return SelectiveKernel(c_in, c_out, kernel_size=SK_KERNELS, keep_3x3=True, split_input=False,
                           rd_channels=sk_width(c_out))


def splat_layer(c_in: int, c_out: int) -> nn.Module:
    if c_in % (SPLAT_RADIX * SPLAT_CARDINALITY):
        raise ValueError(f"splat: input channels {c_in} must be a multiple of radix × cardinality = "
                         f"{SPLAT_RADIX * SPLAT_CARDINALITY} (each split reads its share of them)")
    # rd_divisor=1: timm's attn width is then max(round(C_in·R/4), 32), ResNeSt's at an even C_in
    return SplitAttn(c_in, c_out, kernel_size=KERNEL, radix=SPLAT_RADIX, groups=SPLAT_CARDINALITY,
                     rd_ratio=1 / SPLAT_REDUCTION, rd_divisor=1, norm_layer=nn.BatchNorm2d)


def condconv_layer(c_in: int, c_out: int) -> nn.Module:
    return RoutedConv2d(c_in, c_out, CONDCONV_EXPERTS, SigmoidRouter(c_in, CONDCONV_EXPERTS))


def dynconv_layer(c_in: int, c_out: int) -> nn.Module:
    return RoutedConv2d(c_in, c_out, DYNCONV_KERNELS, SoftmaxRouter(c_in, dynconv_width(c_in), DYNCONV_KERNELS))


# --- the papers' parameter counts of one layer C_in → C_out (3×3 kernels) ------------------------

def plain_params(c_in: int, c_out: int) -> int:
    """The toy's conv: 9·C_in·C_out + C_out."""
    return KERNEL ** 2 * c_in * c_out + c_out


def sk_params(c_in: int, c_out: int, paths: int = len(SK_KERNELS)) -> int:
    """SK: M branches, 3×3 conv (no bias) + BN(C_out): M(9·C_in·C_out + 2C_out); fuse W (C_out → d, no
    bias) + BN(d): C_out·d + 2d; select W_l (d → C_out, no bias) per branch: M·d·C_out.
    Total M(9·C_in·C_out + 2C_out) + (M + 1)·C_out·d + 2d, d = max(C_out/16, 32)."""
    d = sk_width(c_out)
    return paths * (KERNEL ** 2 * c_in * c_out + 2 * c_out) + (paths + 1) * c_out * d + 2 * d


def splat_params(c_in: int, c_out: int, radix: int = SPLAT_RADIX) -> int:
    """Split Attention (cardinality 1): R splits, 3×3 conv C_in/R → C_out each (no bias) = 9·C_in·C_out,
    BN(R·C_out); fc₁ C_out → a (+ b), BN(a); fc₂ a → R·C_out (+ b).
    Total 9·C_in·C_out + 3R·C_out + (R + 1)·C_out·a + 3a, a = max(C_in·R/4, 32)."""
    a = splat_width(c_in)
    return KERNEL ** 2 * c_in * c_out + 3 * radix * c_out + (radix + 1) * c_out * a + 3 * a


def condconv_params(c_in: int, c_out: int, experts: int = CONDCONV_EXPERTS) -> int:
    """CondConv: K experts' 3×3 kernels and biases K(9·C_in·C_out + C_out); routing R (C_in → K, + b)
    C_in·K + K."""
    return experts * (KERNEL ** 2 * c_in * c_out + c_out) + c_in * experts + experts


def dynconv_params(c_in: int, c_out: int, kernels: int = DYNCONV_KERNELS) -> int:
    """DynConv: K kernels and biases K(9·C_in·C_out + C_out); attention FC₁ (C_in → h, + b) and FC₂
    (h → K, + b): C_in·h + h + h·K + K, h = max(C_in/4, K)."""
    h = dynconv_width(c_in)
    return kernels * (KERNEL ** 2 * c_in * c_out + c_out) + c_in * h + h + h * kernels + kernels


# --- the registry ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScratchMethod:
    """One method that replaces the toy's 3×3 convs. `layer(c_in, c_out)` builds it, `formula(c_in, c_out)`
    is the paper's count of it; `plain_stem`: conv1 (on the image) stays the toy's conv; every width is a
    multiple of `multiple`."""
    name: str
    title: str
    source: str
    layer_text: str
    layer: Callable[[int, int], nn.Module]
    formula: Callable[[int, int], int]
    plain_stem: bool = False
    multiple: int = 1

    def layers(self, in_channels: int, widths: Sequence[int]) -> list[tuple[str, int, int]]:
        """(kind, C_in, C_out) of the toy's conv layers: kind "plain" (the toy's conv) or the method's."""
        chans = (in_channels, *widths)
        return [("plain" if i == 0 and self.plain_stem else self.name, a, b)
                for i, (a, b) in enumerate(zip(chans, chans[1:]))]


SCRATCH: dict[str, ScratchMethod] = {s.name: s for s in [
    ScratchMethod("sk", "Selective Kernel (Li et al., 2019)", "timm.layers.SelectiveKernel (split_input=False)",
                  "2 branches, 3×3 and 3×3 dilation 2 (for 5×5), each conv + BN + ReLU; fuse GAP → FC "
                  f"C → d → BN → ReLU, d = max(C/{SK_REDUCTION}, {SK_MIN_WIDTH}); select: softmax over branches "
                  f"per channel", sk_layer, sk_params),
    ScratchMethod("splat", "Split Attention (ResNeSt, Zhang et al., 2022)",
                  "timm.layers.SplitAttn (rd_divisor=1, BatchNorm)",
                  f"radix {SPLAT_RADIX}, cardinality {SPLAT_CARDINALITY}: 3×3 conv C_in → R·C_out in R groups "
                  f"+ BN + ReLU; GAP of the splits' sum → FC C_out → a → BN → ReLU → FC a → R·C_out, "
                  f"a = max(C_in·R/{SPLAT_REDUCTION}, {SPLAT_MIN_WIDTH}); softmax over the splits per channel",
                  splat_layer, splat_params, plain_stem=True, multiple=SPLAT_RADIX * SPLAT_CARDINALITY),
    ScratchMethod("condconv", f"CondConv, {CONDCONV_EXPERTS} experts (Yang et al., 2019)",
                  "timm.layers.CondConv2d + own routing (gattanet.adapters.scratch.SigmoidRouter)",
                  f"3×3 conv with kernel and bias Σ_k a_k W_k over K = {CONDCONV_EXPERTS} experts, "
                  f"a = σ(GAP(x)·R + b)", condconv_layer, condconv_params),
    ScratchMethod("dynconv", f"Dynamic Convolution, K = {DYNCONV_KERNELS} (Chen et al., 2020)",
                  "timm.layers.CondConv2d (kernel mixing) + own attention (gattanet.adapters.scratch.SoftmaxRouter)",
                  f"3×3 conv with kernel and bias Σ_k π_k W_k over K = {DYNCONV_KERNELS} kernels, "
                  f"π = softmax(FC(ReLU(FC(GAP(x))))/τ), first FC C_in → max(C_in/{DYNCONV_REDUCTION}, K)",
                  dynconv_layer, dynconv_params),
]}

SCRATCH_DEVIATIONS: dict[str, tuple[str, ...]] = {
    "*": ("Each method replaces the toy's three 3×3 convs in the toy CNN (the rest — ReLU, 2×2 max-pool, "
          "dropout, the hidden dense layer, the logits, and the taps — is the toy's); the papers put them in "
          "deep residual networks with a BN after every conv. The toy has no BN, so none is added outside "
          "the methods' own (SK's and Split Attention's BNs are part of their layers).",
          "The widths are the toy's (32, 64, 128) and hidden 256 scaled by one factor s = n/256 (each "
          "rounded) whose total parameter count is closest to the plain toy's, as the wider toy is matched; "
          "the papers compare at their own networks' widths, at a higher count than the plain network's.",
          "The toy's ReLU after each conv stays (the tap is after it); on SK and Split Attention, whose "
          "outputs are convex combinations of ReLU outputs, it changes nothing."),
    "sk": ("The branches are dense convs (G = 1): SKNet's are grouped (G = 32, ResNeXt's cardinality), which "
           "neither a 1- or 3-channel image nor the toy's narrow widths can be split into.",
           "Both branches read all input channels (SKNet's definition); timm's default split_input=True, "
           "which halves them, is off."),
    "splat": ("conv1, which reads the image, stays the toy's plain conv: a radix-2 split cannot divide 1 or 3 "
              "image channels (ResNeSt's own stem is plain convs too); every width is even so that conv2 and "
              "conv3 can split their inputs.",
              "The attention width is ResNeSt's max(C_in·R/4, 32) with C_in the layer's input channels; in "
              "ResNeSt's bottleneck C_in = C_out."),
    "condconv": (f"K = {CONDCONV_EXPERTS} experts, CondConv's main setting (DY-CNN compares its K = 4 against "
                 f"CondConv at twice as many experts); at a fixed total this shrinks the widths most of the four.",
                 "Each expert has a bias, mixed like the kernels, since the toy's convs have one (the papers' "
                 "convs are followed by BN and have none).",
                 "All three convs are CondConv layers; the paper mostly converts the later layers of its "
                 "networks. No dropout on the routing weights."),
    "dynconv": (f"τ stays fixed at {DYNCONV_TAU_END:g}, the paper's value after its anneal: the paper's τ falling "
                f"linearly from {DYNCONV_TAU_START:g} to {DYNCONV_TAU_END:g} over the first {DYNCONV_TAU_EPOCHS} "
                f"epochs is not run (the training loop's per-epoch hook, fit's `on_epoch`, could set it; the "
                f"committed runs were trained at the fixed τ).",
                "The attention has no BN (the paper's figure: GAP → FC → ReLU → FC → softmax); its hidden "
                "width is C_in/4 but at least K = 4: on conv1, reading a 1- or 3-channel image, C_in/4 "
                "gives one ReLU unit, which can die and freeze that layer's attention."),
}


def scratch_method(method: str) -> ScratchMethod:
    """The registry entry, or a ValueError naming the allowed methods."""
    try:
        return SCRATCH[method]
    except (KeyError, TypeError):
        raise ValueError(f"unknown from-scratch method {method!r}; allowed: {', '.join(SCRATCH)}") from None


# --- the network -----------------------------------------------------------------------------------

class ScratchToy(ToyCNN):
    """The toy CNN (same blocks, taps, pooling, dropout, hidden layer) with each 3×3 conv the method's
    layer (Split Attention: from conv2 on). `arch` is "scratch-<method>"."""

    def __init__(self, method: str, in_channels: int = 3, num_classes: int = 10,
                 widths: Sequence[int] = TOY_WIDTHS, hidden: int = TOY_HIDDEN, dropout: float = 0.2,
                 input_size: int = 32):
        spec = scratch_method(method)
        super().__init__(in_channels, num_classes, widths, hidden, dropout, input_size)
        self.method, self.arch = method, f"scratch-{method}"
        self.convs = nn.ModuleList(plain_conv(a, b) if kind == "plain" else spec.layer(a, b)
                                   for kind, a, b in spec.layers(in_channels, self.widths))


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def toy_total(in_channels: int, num_classes: int, input_size: int = 32) -> int:
    """The plain toy's parameter count (the from-scratch track's budget)."""
    with torch.device("meta"):
        return count_params(ToyCNN(in_channels, num_classes, input_size=input_size))


def scaled_config(method: str, n: int) -> tuple[tuple[int, ...], int]:
    """The toy scaled by s = n / 256: hidden n, widths 32 s, 64 s, 128 s, each rounded to the method's
    multiple (at least that multiple)."""
    k = scratch_method(method).multiple
    return tuple(k * max(1, round(w * n / (TOY_HIDDEN * k))) for w in TOY_WIDTHS), n


def scratch_widths(method: str, total: int, in_channels: int, num_classes: int,
                   input_size: int = 32) -> tuple[tuple[int, ...], int, int]:
    """(widths, hidden, params) of the ScratchToy scaled by one factor (on a 1/256 grid) whose parameter
    count, counted on the built network, is closest to `total`."""
    scratch_method(method)
    check_target(total)

    @cache
    def count(n: int) -> int:
        widths, hidden = scaled_config(method, n)
        with torch.device("meta"):
            return count_params(ScratchToy(method, in_channels, num_classes, widths, hidden, input_size=input_size))

    upper = TOY_HIDDEN
    while count(upper) < total:
        upper *= 2
    n, params = closest(range(1, upper + 1), count, total)
    widths, hidden = scaled_config(method, n)
    return widths, hidden, params


def build_scratch(method: str, in_channels: int, num_classes: int, input_size: int = 32,
                  total: int | None = None, dropout: float = 0.2) -> ScratchToy:
    """The method's ScratchToy at `total` parameters (default: the plain toy's count)."""
    total = toy_total(in_channels, num_classes, input_size) if total is None else total
    widths, hidden, _ = scratch_widths(method, total, in_channels, num_classes, input_size)
    return ScratchToy(method, in_channels, num_classes, widths, hidden, dropout, input_size)
