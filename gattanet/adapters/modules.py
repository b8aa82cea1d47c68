"""The related-work attention modules that no well-kept library has (timm's are used where it has them,
see gattanet.adapters.addons), each as its paper defines it, and the gate that makes a module the
identity at initialisation. Feature-map modules map (B, C, H, W) → the same shape.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers.bottleneck_attn import BottleneckAttn
from torch import Tensor, nn


class GatedResidual(nn.Module):
    """x + γ·(module(x) − x) with a learned scalar γ initialised to 0: the identity at init, the
    counterpart of GAttANet's α₀ = 0 for the modules whose output is a gated x (SE, ECA, CBAM, BAM,
    Gather-Excite, the Residual-Attention mask)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.gamma * (self.module(x) - x)


def zero_(module: nn.Module) -> nn.Module:
    """Every parameter of `module` set to 0 (a zero-init last layer or gate); returns it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _positive(name: str, **sizes: int) -> None:
    for key, v in sizes.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: {key} must be an integer >= 1, got {v!r}")


class BAM(nn.Module):
    """Bottleneck Attention Module (Park et al., 2018), as ../shared/papers/004 (§5) and the authors'
    code define it: a' = W₂ δ(BN(W₁ z)) (z the channel means, W₁: C → C/r), A' = 1×1 (C/r → 1) of two
    3×3 convs with dilation 4 after a 1×1 reduction C → C/r (BN + ReLU after every conv but the last);
    A = σ(a' ⊗ A'), X̃ = X ⊙ (1 + A)."""

    def __init__(self, channels: int, hidden: int, dilation: int = 4):
        super().__init__()
        _positive("bam", channels=channels, hidden=hidden, dilation=dilation)
        self.channel = nn.Sequential(nn.Linear(channels, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                     nn.Linear(hidden, channels))
        layers: list[nn.Module] = [nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
        for _ in range(2):
            layers += [nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation), nn.BatchNorm2d(hidden),
                       nn.ReLU(inplace=True)]
        self.spatial = nn.Sequential(*layers, nn.Conv2d(hidden, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        a = self.channel(x.mean((2, 3)))[:, :, None, None]  # a' (B, C, 1, 1)
        return x * (1 + torch.sigmoid(a * self.spatial(x)))  # A' (B, 1, H, W)


class GatherExcite(nn.Module):
    """GE-θ+ (Hu et al., 2018; 004 §6): gather = log₂(extent) depthwise 3×3 stride-2 convs with BN (ReLU
    between), excite = SE's MLP as 1×1 convs C → hidden → C, nearest upsampling back to (H, W), sigmoid gate.

    Written here because timm 1.0.31's GatherExcite cannot be built with its MLP or its parametric
    gather (it passes its device/dtype dict positionally: TypeError)."""

    def __init__(self, channels: int, hidden: int, extent: int = 8):
        super().__init__()
        _positive("gather-excite", channels=channels, hidden=hidden)
        steps = round(math.log2(extent)) if extent >= 2 else 0
        if steps < 1 or 2 ** steps != extent:
            raise ValueError(f"gather-excite: extent must be a power of two >= 2, got {extent}")
        layers: list[nn.Module] = []
        for i in range(steps):
            layers += [nn.Conv2d(channels, channels, 3, stride=2, padding=1, groups=channels, bias=False),
                       nn.BatchNorm2d(channels)]
            if i < steps - 1:
                layers.append(nn.ReLU(inplace=True))
        self.gather = nn.Sequential(*layers)
        self.excite = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                    nn.Conv2d(hidden, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        g = self.excite(self.gather(x))
        return x * torch.sigmoid(F.interpolate(g, size=x.shape[-2:], mode="nearest"))


def _check_heads(name: str, width: int, heads: int) -> None:
    _positive(name, width=width, heads=heads)
    if width % heads:
        raise ValueError(f"{name}: width (key/value channels) must be a positive multiple of heads={heads}, "
                         f"got {width}")


def pooled_size(size: tuple[int, int]) -> tuple[int, int]:
    """The map size after avg_pool_3x3_s2: ⌈H/2⌉ × ⌈W/2⌉ (padding 1)."""
    return (size[0] + 1) // 2, (size[1] + 1) // 2


def avg_pool_3x3_s2(x: Tensor) -> Tensor:
    """Bello et al.'s downsampling of self-attention's input on the largest maps: 3×3 average pooling, stride 2."""
    return F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)


def upsample_bilinear(z: Tensor, size: tuple[int, int]) -> Tensor:
    """The upsampling back to the map's size that follows it: bilinear interpolation."""
    return F.interpolate(z, size=size, mode="bilinear", align_corners=False)


class AttentionAugmentation(nn.Module):
    """Attention augmentation (Bello et al., 2019) on a frozen conv: x + W(MHA(x)), W zero-init.

    MHA is timm's BottleneckAttn, which implements Bello et al.'s relative self-attention (qkv from one
    1×1 conv, d_k = d_v = width over `heads` heads, logits (q·k + q·r^W + q·r^H)/√d_kh with the 2-D
    relative embeddings shared by the heads). The paper concatenates MHA's d_v channels, mixed by its
    W_O (1×1, d_v → d_v), with a conv narrowed to C − d_v channels; a frozen conv cannot be narrowed
    and the frozen next layer reads C channels, so the d_v attention channels enter those C channels
    through one learned 1×1 map W (d_v → C, W_O folded into it), added to the full conv's output.
    `downsample`: MHA reads the map average-pooled 3×3 with stride 2 and its output is upsampled bilinearly
    (the paper's remedy on its largest maps), so its relative embeddings span the pooled size."""

    def __init__(self, channels: int, width: int, size: tuple[int, int], heads: int, downsample: bool = False):
        super().__init__()
        _check_heads("aa-conv", width, heads)
        self.downsample = downsample
        attn_size = pooled_size(size) if downsample else tuple(size)
        self.attn = BottleneckAttn(channels, width, feat_size=attn_size, num_heads=heads, dim_head=width // heads,
                                   qkv_bias=True, scale_pos_embed=True)
        self.proj = zero_(nn.Conv2d(width, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        if not self.downsample:
            return x + self.proj(self.attn(x))
        return x + self.proj(upsample_bilinear(self.attn(avg_pool_3x3_s2(x)), x.shape[-2:]))


class MultiHeadSelfAttention(nn.Module):
    """Plain multi-head self-attention (Vaswani et al.; 004 §11) over the H·W positions of the tapped map,
    no position information: x + W_O(Concat_h softmax(Q_h K_hᵀ/√d_h) V_h), Q, K, V from one 1×1 conv
    (C → 3·width), W_O a 1×1 conv width → C, zero-init. `downsample`: as AttentionAugmentation's, attention
    over the pooled map's positions, its output upsampled bilinearly before W_O."""

    def __init__(self, channels: int, width: int, heads: int, downsample: bool = False):
        super().__init__()
        _check_heads("mhsa", width, heads)
        self.width, self.heads, self.downsample = width, heads, downsample
        self.qkv = nn.Conv2d(channels, 3 * width, 1)
        self.proj = zero_(nn.Conv2d(width, channels, 1))

    def attend(self, x: Tensor) -> Tensor:
        """Concat_h softmax(Q_h K_hᵀ/√d_h) V_h over the positions of x: (B, width, H, W)."""
        B, _, H, W = x.shape
        q, k, v = self.qkv(x).reshape(B, 3, self.heads, self.width // self.heads, H * W).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, H·W, d_h)
        return out.transpose(-1, -2).reshape(B, self.width, H, W)

    def forward(self, x: Tensor) -> Tensor:
        if not self.downsample:
            return x + self.proj(self.attend(x))
        return x + self.proj(upsample_bilinear(self.attend(avg_pool_3x3_s2(x)), x.shape[-2:]))


def relative_position_index(n: int, max_n: int, device: torch.device | None = None) -> Tensor:
    """idx[i, j] = j − i + max_n − 1: the row of a (2·max_n − 1)-row relative embedding for offset j − i."""
    if n > max_n:
        raise ValueError(f"input side {n} exceeds the side {max_n} the relative embeddings were built for")
    r = torch.arange(n, device=device)
    return r[None, :] - r[:, None] + max_n - 1


def axial_positional(q: Tensor, v: Tensor, rel: Tensor, axis: int) -> Tensor:
    """GSA's column-only (axis=3, along H) or row-only (axis=4, along W) positional attention,
    y_ab = Σ_δ (q_ab · r_δ) v_{(a,b)+δ}, with the relative embeddings r as keys and no softmax
    (Shen et al., appendix). q: (B, heads, k, H, W); v: (B, heads, v, H, W); rel: (2·side − 1, k)."""
    p = rel[relative_position_index(q.shape[axis], (rel.shape[0] + 1) // 2, q.device)]  # (side_i, side_j, k)
    if axis == 3:
        s = torch.einsum("bnkxy,xik->bnxyi", q, p)
        return torch.einsum("bnxyi,bnviy->bnvxy", s, v)
    if axis == 4:
        s = torch.einsum("bnkxy,yjk->bnxyj", q, p)
        return torch.einsum("bnxyj,bnvxj->bnvxy", s, v)
    raise ValueError(f"axis must be 3 (columns) or 4 (rows), got {axis}")


class GlobalSelfAttention(nn.Module):
    """The GSA module (Shen et al.) with its batch norms, as an adapter: x + BN_z(W_z ReLU(BN(GSA(x)))).

    GSA: K, Q, V from 1×1 convs (d_k = d_v = width, `heads` heads), each followed by BN ("all 1×1
    convolutions and GSA modules are followed by batch normalization"); content attention
    Q·(softmax_positions(K)ᵀ V), no softmax on Q; global axial positional attention (relative embeddings
    as keys, no softmax, shared by the heads): column-only → BN → row-only; their sum. After it, the rest
    of GSA-ResNet's bottleneck: BN → ReLU → 1×1 conv (width → C) → BN, the last BN zero-init (scale and
    shift 0, as the non-local block's), which makes the module the identity at init."""

    def __init__(self, channels: int, width: int, size: tuple[int, int], heads: int):
        super().__init__()
        _check_heads("gsa", width, heads)
        self.width, self.heads, self.head_dim = width, heads, width // heads
        self.qkv = nn.Conv2d(channels, 3 * width, 1, bias=False)
        self.qkv_norm = nn.BatchNorm2d(3 * width)
        self.rel_col = nn.Parameter(torch.randn(2 * size[0] - 1, self.head_dim) * self.head_dim ** -0.5)
        self.rel_row = nn.Parameter(torch.randn(2 * size[1] - 1, self.head_dim) * self.head_dim ** -0.5)
        self.col_norm = nn.BatchNorm2d(width)
        self.out_norm = nn.BatchNorm2d(width)
        self.proj = nn.Conv2d(width, channels, 1, bias=False)
        self.proj_norm = zero_(nn.BatchNorm2d(channels))

    def gsa(self, x: Tensor) -> Tensor:
        """The GSA module's output (B, width, H, W), before its BN."""
        B, _, H, W = x.shape
        q, k, v = self.qkv_norm(self.qkv(x)).reshape(B, 3, self.heads, self.head_dim, H, W).unbind(1)
        context = torch.einsum("bnki,bnvi->bnkv", k.flatten(3).softmax(-1), v.flatten(3))
        content = torch.einsum("bnki,bnkv->bnvi", q.flatten(3), context).reshape(B, self.width, H, W)
        col = axial_positional(q, v, self.rel_col, axis=3).reshape(B, self.width, H, W)
        col = self.col_norm(col).reshape(B, self.heads, self.head_dim, H, W)
        row = axial_positional(q, col, self.rel_row, axis=4).reshape(B, self.width, H, W)
        return content + row

    def forward(self, x: Tensor) -> Tensor:
        return x + self.proj_norm(self.proj(F.relu(self.out_norm(self.gsa(x)))))


class PreActBottleneck(nn.Module):
    """The Residual Attention Network's residual unit (pre-activation bottleneck, He et al. 2016):
    x + 1×1(h → C) ∘ BN-ReLU ∘ 3×3(h → h) ∘ BN-ReLU ∘ 1×1(C → h) ∘ BN-ReLU (x), convs without bias."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU(inplace=True), nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def mask_levels(height: int, width: int, deepest: int = 3) -> int:
    """The mask branch's number of 2× max-poolings: halve while the smaller side stays >= 4, at most
    `deepest` (the paper's stage-1 mask pools 3 times, 56 → 7), at least 1."""
    side, levels = min(height, width), 0
    while levels < deepest and (side + 1) // 2 >= 4:
        side, levels = (side + 1) // 2, levels + 1
    return max(levels, 1)


class ResidualAttentionMask(nn.Module):
    """The Residual Attention Network's attention module on a frozen trunk (Wang et al., 2017):
    H(x) = (1 + M(x)) · x, the trunk T(x) being the frozen layer's own output x.

    M is the bottom-up top-down soft mask: `levels` times (3×3 stride-2 max-pool, one residual unit),
    a skip unit at every level but the deepest, two units at the bottom; then back up, at each level
    bilinear upsampling + that level's features + its skip, then one unit; upsampled to (H, W) and
    added to the trunk; BN-ReLU-1×1-BN-ReLU-1×1, sigmoid (r = 1 unit per step, as the paper's)."""

    def __init__(self, channels: int, hidden: int, levels: int):
        super().__init__()
        _positive("ran-mask", channels=channels, hidden=hidden, levels=levels)
        self.down = nn.ModuleList(PreActBottleneck(channels, hidden) for _ in range(levels))
        self.skip = nn.ModuleList(PreActBottleneck(channels, hidden) for _ in range(levels - 1))
        self.bottom = nn.Sequential(PreActBottleneck(channels, hidden), PreActBottleneck(channels, hidden))
        self.up = nn.ModuleList(PreActBottleneck(channels, hidden) for _ in range(levels - 1))
        self.head = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, hidden, 1, bias=False),
                                  nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, channels, 1, bias=False))

    def mask(self, x: Tensor) -> Tensor:
        """M(x) in (0, 1), the shape of x."""
        feats, y = [], x
        for unit in self.down:
            y = unit(F.max_pool2d(y, 3, stride=2, padding=1))
            feats.append(y)
        z = self.bottom(y)
        for level in reversed(range(len(self.up))):
            f = feats[level]
            z = self.up[level](_resize(z, f) + f + self.skip[level](f))
        return torch.sigmoid(self.head(_resize(z, x) + x))

    def forward(self, x: Tensor) -> Tensor:
        return (1 + self.mask(x)) * x


def _resize(z: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(z, size=like.shape[-2:], mode="bilinear", align_corners=False)


class PayAttentionHead(nn.Module):
    """Learn to Pay Attention (Jetley et al., 2018; ../shared/papers/003) on a frozen backbone: per conv tap
    s the local features l_i and the global vector g (the frozen penultimate features) give the
    parametrised compatibility c_i = ⟨u_s, l_i + ĝ_s⟩, a = softmax_i(c), g_a^s = Σ_i a_i l_i; the g_a^s
    are concatenated into a classifier ("concat-pc", the paper's best). ĝ_s is g downscaled to the
    layer's C_s by a single linear layer (as the paper), factored W_s·E through a shared rank-`rank`
    embedding E (the budget knob). The classifier is zero-init and its output is added to the frozen
    logits, so the model starts as the backbone."""

    def __init__(self, local_channels: Sequence[int], global_dim: int, num_classes: int, rank: int):
        super().__init__()
        _positive("ltpa", global_dim=global_dim, num_classes=num_classes, rank=rank)
        if not local_channels:
            raise ValueError("ltpa: needs at least one conv tap of local features")
        self.embed = nn.Linear(global_dim, rank, bias=False)
        self.project = nn.ModuleList(nn.Linear(rank, c) for c in local_channels)
        self.u = nn.ParameterList(nn.Parameter(torch.randn(c) * c ** -0.5) for c in local_channels)
        self.classifier = zero_(nn.Linear(sum(local_channels), num_classes))

    def attended(self, local: Sequence[Tensor], g: Tensor) -> list[Tensor]:
        """g_a^s (B, C_s) per layer."""
        e = self.embed(g)
        out = []
        for l, project, u in zip(local, self.project, self.u, strict=True):
            c = torch.einsum("c,bchw->bhw", u, l + project(e)[:, :, None, None]).flatten(1)
            out.append(torch.einsum("bn,bcn->bc", c.softmax(-1), l.flatten(2)))
        return out

    def forward(self, local: Sequence[Tensor], g: Tensor) -> Tensor:
        """The logits' change (B, num_classes): 0 at init."""
        return self.classifier(torch.cat(self.attended(local, g), 1))
