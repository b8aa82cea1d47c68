"""The related work's attention modules as adapters on a frozen conv layer: (B, C, H, W) → same shape.

Every adapter is the identity at initialisation, the fair counterpart of GAttANet's α₀ = 0:
- SE, ECA, CBAM and Gather-Excite stay as their papers define them (multiplicative sigmoid gates,
  which are not the identity at init) inside `GatedResidual`: x + γ·(module(x) − x), γ a learned
  scalar per layer initialised to 0 (one extra parameter per tap, as GAttANet's α).
- the non-local block is already residual, z = x + BN(W_z y), with the BN's scale and shift at 0
  (timm, after Wang et al.); a γ on top would start both factors of γ·BN(…) at 0 and neither
  would ever get a gradient, so it keeps its own zero-init BN as its gate.
- attention-augmented convolution and GSA add a projection of their attention maps to x,
  x + proj(attention(x)), with proj's weight and bias initialised to 0.

`ADAPTERS[name](channels, width, size)` builds one adapter; `width` is its size knob and `size`
the tap's (H, W) (the relative position embeddings of aa-conv and gsa need it; the others ignore it).
"""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.layers import EcaModule, NonLocalAttn, SEModule
from timm.layers.cbam import CbamModule
from torch import Tensor, nn

AdapterFactory = Callable[[int, int, tuple[int, int]], nn.Module]
HEADS = 4  # of aa-conv and gsa (their papers use 8; our widths are small): widths are multiples of it


class GatedResidual(nn.Module):
    """x + γ·(module(x) − x) with a learned scalar γ initialised to 0: the identity at init."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.gamma * (self.module(x) - x)


class GatherExcite(nn.Module):
    """GE-θ+ (Hu et al., 2018): gather = log2(extent) depthwise 3×3 stride-2 convs with BN (ReLU
    between), excite = 1×1-conv MLP C → width → C, nearest upsampling back to (H, W), sigmoid gate.

    Written here because timm 1.0.31's GatherExcite cannot be built with its MLP or its
    parametric gather (it passes its device/dtype dict positionally: TypeError)."""

    def __init__(self, channels: int, rd_channels: int, extent: int = 8):
        super().__init__()
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
        self.excite = nn.Sequential(nn.Conv2d(channels, rd_channels, 1), nn.ReLU(inplace=True),
                                    nn.Conv2d(rd_channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        g = self.excite(self.gather(x))
        return x * torch.sigmoid(F.interpolate(g, size=x.shape[-2:], mode="nearest"))


def relative_index(n: int, max_n: int, device: torch.device | None = None) -> Tensor:
    """idx[i, j] = j − i + max_n − 1: the row of a (2·max_n − 1)-row relative embedding for offset j − i."""
    if n > max_n:
        raise ValueError(f"input side {n} exceeds the side {max_n} the relative embeddings were built for")
    r = torch.arange(n, device=device)
    return r[None, :] - r[:, None] + max_n - 1


def relative_logits(q: Tensor, rel_h: Tensor, rel_w: Tensor) -> Tensor:
    """Bello et al.'s 2-D relative logits q_i·r^W_{x_j−x_i} + q_i·r^H_{y_j−y_i}.
    q: (B, heads, d, H, W); rel_h: (2·H_max − 1, d); rel_w: (2·W_max − 1, d) → (B, heads, H·W, H·W)."""
    B, n, _, H, W = q.shape
    rh = rel_h[relative_index(H, (rel_h.shape[0] + 1) // 2, q.device)]  # (H_i, H_j, d)
    rw = rel_w[relative_index(W, (rel_w.shape[0] + 1) // 2, q.device)]  # (W_i, W_j, d)
    lh = torch.einsum("bndhw,hud->bnhwu", q, rh)  # (B, n, H_i, W_i, H_j)
    lw = torch.einsum("bndhw,wvd->bnhwv", q, rw)  # (B, n, H_i, W_i, W_j)
    return (lh[..., :, None] + lw[..., None, :]).reshape(B, n, H * W, H * W)


def _check_heads(name: str, width: int, heads: int) -> None:
    if width < heads or width % heads:
        raise ValueError(f"{name}: width (key/value channels) must be a positive multiple of "
                         f"heads={heads}, got {width}")


class AugmentedAttention(nn.Module):
    """Attention-augmented convolution (Bello et al., 2019) as an adapter: x + proj(MHSA(x)).

    Multi-head self-attention over all positions, keys/queries/values from one 1×1 conv (d_k = d_v =
    width), logits q·k/√d_kh plus the paper's 2-D relative height/width logits (embeddings shared
    by the heads). The paper concatenates the attention maps to the conv's output channels; a
    frozen next layer cannot take extra channels, so proj (1×1, width → C, zero-init) maps them
    into the C channels and adds them (W^O and the concat folded into one projection)."""

    def __init__(self, channels: int, width: int, size: tuple[int, int], heads: int = HEADS):
        super().__init__()
        _check_heads("aa-conv", width, heads)
        self.width, self.heads, self.head_dim = width, heads, width // heads
        self.qkv = nn.Conv2d(channels, 3 * width, 1)
        self.rel_h = nn.Parameter(torch.randn(2 * size[0] - 1, self.head_dim) * self.head_dim ** -0.5)
        self.rel_w = nn.Parameter(torch.randn(2 * size[1] - 1, self.head_dim) * self.head_dim ** -0.5)
        self.proj = nn.Conv2d(width, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        B, _, H, W = x.shape
        q, k, v = self.qkv(x).reshape(B, 3, self.heads, self.head_dim, H, W).unbind(1)
        q = q * self.head_dim ** -0.5
        logits = torch.einsum("bndi,bndj->bnij", q.flatten(3), k.flatten(3))
        logits = logits + relative_logits(q, self.rel_h, self.rel_w)
        out = torch.einsum("bnij,bndj->bndi", logits.softmax(-1), v.flatten(3))
        return x + self.proj(out.reshape(B, self.width, H, W))


def axial_positional(q: Tensor, v: Tensor, rel: Tensor, axis: int) -> Tensor:
    """GSA's column-only (axis=3, along H) or row-only (axis=4, along W) positional attention,
    y_ab = Σ_δ (q_ab · r_δ) v_{(a,b)+δ}, with the relative embeddings r as keys and no softmax
    (Shen et al., appendix). q: (B, heads, k, H, W); v: (B, heads, v, H, W); rel: (2·side − 1, k)."""
    p = rel[relative_index(q.shape[axis], (rel.shape[0] + 1) // 2, q.device)]  # (side_i, side_j, k)
    if axis == 3:
        s = torch.einsum("bnkxy,xik->bnxyi", q, p)
        return torch.einsum("bnxyi,bnviy->bnvxy", s, v)
    if axis == 4:
        s = torch.einsum("bnkxy,yjk->bnxyj", q, p)
        return torch.einsum("bnxyj,bnvxj->bnvxy", s, v)
    raise ValueError(f"axis must be 3 (columns) or 4 (rows), got {axis}")


class GlobalSelfAttention(nn.Module):
    """The GSA module (Shen et al.) as an adapter: x + proj(content + positional).

    Kept: keys/queries/values from 1×1 convs (d_k = d_v = width, `heads` heads); the efficient
    global content attention Q·(softmax_positions(K)ᵀ V), no softmax on Q; the global axial
    positional attention (relative embeddings as keys, no softmax): column-only → BN → row-only,
    embeddings shared by the heads. Left out: the BNs the paper puts after every 1×1 conv and after
    the module (the convs' biases and the zero-init proj, 1×1 width → C, take their place)."""

    def __init__(self, channels: int, width: int, size: tuple[int, int], heads: int = HEADS):
        super().__init__()
        _check_heads("gsa", width, heads)
        self.width, self.heads, self.head_dim = width, heads, width // heads
        self.qkv = nn.Conv2d(channels, 3 * width, 1)
        self.rel_col = nn.Parameter(torch.randn(2 * size[0] - 1, self.head_dim) * self.head_dim ** -0.5)
        self.rel_row = nn.Parameter(torch.randn(2 * size[1] - 1, self.head_dim) * self.head_dim ** -0.5)
        self.col_norm = nn.BatchNorm2d(width)
        self.proj = nn.Conv2d(width, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        B, _, H, W = x.shape
        q, k, v = self.qkv(x).reshape(B, 3, self.heads, self.head_dim, H, W).unbind(1)
        context = torch.einsum("bnki,bnvi->bnkv", k.flatten(3).softmax(-1), v.flatten(3))
        content = torch.einsum("bnki,bnkv->bnvi", q.flatten(3), context).reshape(B, self.width, H, W)
        col = axial_positional(q, v, self.rel_col, axis=3).reshape(B, self.width, H, W)
        col = self.col_norm(col).reshape(B, self.heads, self.head_dim, H, W)
        row = axial_positional(q, col, self.rel_row, axis=4).reshape(B, self.width, H, W)
        return x + self.proj(content + row)


def _positive(name: str, width: int) -> None:
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"{name}: width must be an integer >= 1, got {width!r}")


def se(channels: int, width: int, size: tuple[int, int]) -> nn.Module:
    """Squeeze-and-Excitation (Hu et al.), width = hidden channels of the MLP (timm SEModule)."""
    _positive("se", width)
    return GatedResidual(SEModule(channels, rd_channels=width))


def eca(channels: int, width: int, size: tuple[int, int]) -> nn.Module:
    """ECA (Wang et al.), width = the odd kernel size k of the 1-D conv over channels (k weights, no
    bias). Its budget cannot be matched: a kernel wider than 2C − 1 would only see zero padding."""
    _positive("eca", width)
    if width % 2 == 0 or width > 2 * channels - 1:
        raise ValueError(f"eca: width (kernel size) must be odd and <= 2*channels-1 = {2 * channels - 1}, "
                         f"got {width}")
    return GatedResidual(EcaModule(kernel_size=width))


def cbam(channels: int, width: int, size: tuple[int, int]) -> nn.Module:
    """CBAM (Woo et al.): channel MLP (width hidden channels, no bias) then a 7×7 spatial gate (timm)."""
    _positive("cbam", width)
    return GatedResidual(CbamModule(channels, rd_channels=width))


def gather_excite(channels: int, width: int, size: tuple[int, int]) -> nn.Module:
    """Gather-Excite θ+ with extent 8 (the largest fixed extent of the paper), width = MLP hidden channels."""
    _positive("gather-excite", width)
    return GatedResidual(GatherExcite(channels, width))


def non_local(channels: int, width: int, size: tuple[int, int]) -> nn.Module:
    """Non-local block (Wang et al., timm's NonLocalAttn), width = channels of θ, φ, g; zero-init BN gate."""
    _positive("non-local", width)
    return NonLocalAttn(channels, rd_channels=width)


def aa_conv(channels: int, width: int, size: tuple[int, int]) -> nn.Module:
    """Attention-augmented convolution branch, HEADS heads, width = d_k = d_v."""
    _positive("aa-conv", width)
    return AugmentedAttention(channels, width, size, heads=HEADS)


def gsa(channels: int, width: int, size: tuple[int, int]) -> nn.Module:
    """Global self-attention module, HEADS heads, width = d_k = d_v."""
    _positive("gsa", width)
    return GlobalSelfAttention(channels, width, size, heads=HEADS)


ADAPTERS: dict[str, AdapterFactory] = {
    "se": se, "eca": eca, "cbam": cbam, "gather-excite": gather_excite,
    "non-local": non_local, "aa-conv": aa_conv, "gsa": gsa,
}


def build_adapter(method: str, channels: int, width: int, size: tuple[int, int]) -> nn.Module:
    """One adapter by name, or a ValueError listing the methods."""
    if method not in ADAPTERS:
        raise ValueError(f"unknown adapter {method!r}; allowed: {', '.join(ADAPTERS)}")
    return ADAPTERS[method](channels, width, size)
