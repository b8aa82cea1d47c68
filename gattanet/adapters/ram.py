"""Recurrent Models of Visual Attention (RAM; Mnih et al., 2014) for the from-scratch track: a network that
never sees the whole image, only T glimpses at locations it chooses, trained by the paper's hybrid loss
(cross-entropy on the final action, REINFORCE on the locations with a learned baseline).

    glimpse sensor  ρ(x, l): K patches of P×P centred at l, patch j covering P·2^j pixels averaged down to P×P
    glimpse network g_t = ReLU(Linear(h_g) + Linear(h_l)),  h_g = ReLU(Linear(ρ(x, l_{t-1}))),  h_l = ReLU(Linear(l_{t-1}))
    core network    h_t = ReLU(Linear(h_{t-1}) + Linear(g_t))
    location policy l_t ~ N(μ_t, σ² I),  μ_t = Linear(h_t)
    action          p(y | x) = softmax(Linear(h_T));   baseline b_t = Linear(h_t)
    loss            CE(p, y) − Σ_t log π(l_t | h_t) · (R − b_t) + Σ_t (R − b_t)²,   R = 1[argmax p = y]

Sizes are the paper's (h_g, h_l: 128; g, h: 256) scaled by one factor to the plain toy's parameter count
(`ram_sizes`), as every from-scratch method is. `RAM.extra_loss` gives the REINFORCE and baseline terms
for a training loop that adds them to its cross-entropy (gattanet.engine.train's Step does).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gattanet.adapters.budget import check_target, closest

GLIMPSES, PATCH, SCALES = 6, 8, 1  # the paper's best on 28×28 MNIST (Table 1a: 6 glimpses, 8×8, 1 scale)
GLIMPSE_HIDDEN, CORE_HIDDEN = 128, 256  # h_g and h_l; g and h ("for all attention models trained in this paper")
LOCATION_STD = 0.11  # σ of the policy: the paper fixes it without printing it; the Torch `rnn` RAM example's default
LOCATION_DIMS = 2  # (x, y) in [-1, 1]², (0, 0) the image's centre

RAM_DEVIATIONS: tuple[str, ...] = (
    f"Glimpses: the paper's setting for centred 28×28 MNIST ({GLIMPSES} glimpses of {PATCH}×{PATCH} at "
    f"{SCALES} scale), on the 32×32 padded images; the first glimpse is at the centre (the paper does not say).",
    f"The policy's σ = {LOCATION_STD} (fixed, as in the paper, which does not give its value); sampled locations "
    f"are clipped to [-1, 1] before the sensor reads them (log π is the unclipped sample's).",
    "In evaluation the locations are the policy's means, not samples, so that a model's per-image "
    "correctness is reproducible.",
    "The baseline reads h_t without gradient (it only reduces the variance of the REINFORCE estimate).",
    "Sizes: h_g, h_l 128 and g, h 256 scaled by one factor to the plain toy's parameter count; trained with the "
    "backbone's protocol (Adam, its learning rate, batch size and early stopping), not the paper's SGD with momentum.",
)


def glimpse(x: Tensor, loc: Tensor, patch: int = PATCH, scales: int = SCALES) -> Tensor:
    """ρ(x, l): (B, C·scales, patch, patch), patch j the (patch·2^j)-pixel square centred at `loc` (B, 2) in
    [-1, 1]² (x, y; align_corners=False: ±1 are the image's outer edges), averaged down to patch × patch;
    zero outside the image. At a location on the pixel grid patch 0 is an exact crop."""
    b, c, height, width = x.shape
    out = []
    for j in range(scales):
        side = patch * 2 ** j
        theta = x.new_zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 1, 1] = side / width, side / height
        theta[:, :, 2] = loc
        grid = F.affine_grid(theta, [b, c, side, side], align_corners=False)
        crop = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out.append(F.avg_pool2d(crop, 2 ** j) if j else crop)
    return torch.cat(out, 1)


class GlimpseNetwork(nn.Module):
    """g = ReLU(Linear(h_g) + Linear(h_l)), h_g = ReLU(Linear(ρ(x, l))), h_l = ReLU(Linear(l))."""

    def __init__(self, in_channels: int, hidden: int, out: int, patch: int = PATCH, scales: int = SCALES):
        super().__init__()
        self.patch, self.scales = patch, scales
        self.what = nn.Linear(in_channels * scales * patch * patch, hidden)
        self.where = nn.Linear(LOCATION_DIMS, hidden)
        self.what_out, self.where_out = nn.Linear(hidden, out), nn.Linear(hidden, out)

    def forward(self, x: Tensor, loc: Tensor) -> Tensor:
        h_g = F.relu(self.what(glimpse(x, loc, self.patch, self.scales).flatten(1)))
        h_l = F.relu(self.where(loc))
        return F.relu(self.what_out(h_g) + self.where_out(h_l))


class CoreNetwork(nn.Module):
    """h_t = ReLU(Linear(h_{t-1}) + Linear(g_t)) (the paper's rectifier core for classification)."""

    def __init__(self, size: int):
        super().__init__()
        self.recurrent, self.input = nn.Linear(size, size), nn.Linear(size, size)

    def forward(self, h: Tensor, g: Tensor) -> Tensor:
        return F.relu(self.recurrent(h) + self.input(g))


@dataclass
class Trace:
    """What a training forward leaves for the loss: log π(l_t | h_t) and b_t, (B, T - 1) each."""
    log_pi: Tensor
    baseline: Tensor


class RAM(nn.Module):
    """The recurrent attention model; forward(x) gives the logits of the action after `glimpses` glimpses.
    In training mode the locations are sampled and the forward keeps a `Trace` for `extra_loss`."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, glimpse_hidden: int = GLIMPSE_HIDDEN,
                 core_hidden: int = CORE_HIDDEN, glimpses: int = GLIMPSES, patch: int = PATCH,
                 scales: int = SCALES, std: float = LOCATION_STD):
        super().__init__()
        if glimpses < 1 or patch < 1 or scales < 1 or not std > 0:
            raise ValueError(f"need glimpses, patch, scales >= 1 and std > 0; got {glimpses}, {patch}, {scales}, {std}")
        self.arch, self.in_channels, self.num_classes = "scratch-ram", in_channels, num_classes
        self.glimpse_hidden, self.core_hidden, self.glimpses, self.std = glimpse_hidden, core_hidden, glimpses, std
        self.glimpse_net = GlimpseNetwork(in_channels, glimpse_hidden, core_hidden, patch, scales)
        self.core = CoreNetwork(core_hidden)
        self.locator = nn.Linear(core_hidden, LOCATION_DIMS)
        self.action = nn.Linear(core_hidden, num_classes)
        self.baseline = nn.Linear(core_hidden, 1)
        self.trace: Trace | None = None

    def forward(self, x: Tensor) -> Tensor:
        loc = x.new_zeros(x.shape[0], LOCATION_DIMS)
        h = x.new_zeros(x.shape[0], self.core_hidden)
        log_pi, baselines = [], []
        for t in range(self.glimpses):
            h = self.core(h, self.glimpse_net(x, loc))
            if t == self.glimpses - 1:
                break
            mu = self.locator(h).float()  # fp32 under autocast: log π and the sensor's coordinates
            if self.training:
                sample = mu.detach() + self.std * torch.randn_like(mu)
                log_pi.append(torch.distributions.Normal(mu, self.std).log_prob(sample).sum(1))
                baselines.append(self.baseline(h.detach()).squeeze(1).float())
                loc = sample.clamp(-1, 1)
            else:
                loc = mu.clamp(-1, 1)
        if self.training:
            empty = x.new_zeros(x.shape[0], 0)
            self.trace = Trace(torch.stack(log_pi, 1) if log_pi else empty,
                               torch.stack(baselines, 1) if baselines else empty)
        return self.action(h)

    def extra_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """The REINFORCE and baseline terms of the hybrid loss for the last training forward (whose logits
        these are): −mean_b Σ_t log π_t (R − b_t) + mean_b Σ_t (R − b_t)², R = 1 where the action is right."""
        if self.trace is None:
            raise RuntimeError("extra_loss needs a training-mode forward first (it reads that forward's trace)")
        reward = (logits.argmax(1) == y).to(self.trace.baseline.dtype)[:, None]
        advantage = reward - self.trace.baseline.detach()
        reinforce = -(self.trace.log_pi * advantage).sum(1).mean()
        return reinforce + (reward - self.trace.baseline).square().sum(1).mean()


def ram_params(in_channels: int, num_classes: int, glimpse_hidden: int = GLIMPSE_HIDDEN,
               core_hidden: int = CORE_HIDDEN, patch: int = PATCH, scales: int = SCALES) -> int:
    """The count of the paper's layers, each Linear with its bias: h_g (C·K·P² + 1)·a, h_l (2 + 1)·a,
    g 2(a + 1)·b, core 2(b + 1)·b, location (b + 1)·2, action (b + 1)·classes, baseline (b + 1)."""
    a, b = glimpse_hidden, core_hidden
    return ((in_channels * scales * patch * patch + 1) * a + (LOCATION_DIMS + 1) * a + 2 * (a + 1) * b
            + 2 * (b + 1) * b + (b + 1) * (LOCATION_DIMS + num_classes + 1))


def scaled_sizes(n: int) -> tuple[int, int]:
    """The paper's sizes scaled by s = n / 128: (h_g = h_l = n, g = h = 2n)."""
    return n, round(n * CORE_HIDDEN / GLIMPSE_HIDDEN)


def ram_sizes(total: int, in_channels: int, num_classes: int) -> tuple[int, int, int]:
    """(glimpse_hidden, core_hidden, params) of the RAM scaled by one factor (on a 1/128 grid) whose
    count is closest to `total`."""
    check_target(total)

    @cache
    def count(n: int) -> int:
        return ram_params(in_channels, num_classes, *scaled_sizes(n))

    upper = GLIMPSE_HIDDEN
    while count(upper) < total:
        upper *= 2
    n, params = closest(range(1, upper + 1), count, total)
    return (*scaled_sizes(n), params)


def build_ram(in_channels: int, num_classes: int, total: int) -> RAM:
    """The RAM at `total` parameters (the plain toy's count, for the from-scratch track)."""
    a, b, _ = ram_sizes(total, in_channels, num_classes)
    return RAM(in_channels, num_classes, a, b)

