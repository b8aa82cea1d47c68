"""GAttANet: a frozen backbone run twice (or T+1 times); the attention scores of one pass scale the
tapped activations of the next, X' = X ⊙ (1 + α_l · a_l) (Eq. 5, `modulate`)."""

from collections.abc import Callable

import torch
from torch import Tensor, nn

from gattanet.models.attention import AttentionState, GlobalAttention
from gattanet.models.backbone import Backbone
from gattanet.models.lesion import full_pattern, parse_lesion


class GAttANet(nn.Module):
    """Backbone (frozen, always in eval mode) + global attention (the only trainable part)."""

    def __init__(self, backbone: Backbone, attention: GlobalAttention, lesion: str | None = None,
                 iterations: int = 1):
        super().__init__()
        if not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
        self.backbone, self.attention, self.iterations = backbone, attention, iterations
        self.taps = backbone.taps()
        got = [(t.name, t.kind, t.channels) for t in attention.taps]
        want = [(t.name, t.kind, t.channels) for t in self.taps]
        if got != want:
            raise ValueError(f"attention was built for taps {got} but the {backbone.arch} backbone has {want}")
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.lesion = lesion
        self.train(False)

    @property
    def lesion(self) -> str:
        """The default lesion pattern (the full one unless set)."""
        return self._lesion

    @lesion.setter
    def lesion(self, pattern: str | None) -> None:
        parse_lesion(pattern, self.taps)
        self._lesion = full_pattern(self.taps) if pattern is None else pattern

    def train(self, mode: bool = True) -> "GAttANet":
        """Only the attention follows `mode`; the frozen backbone stays in eval (dropout off, BN stats fixed)."""
        self.training = mode
        self.attention.train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: Tensor, lesion: str | None = None,
                return_state: bool = False) -> Tensor | tuple[Tensor, AttentionState]:
        """Logits of the last pass: pass 1 is the plain backbone, each further pass rescales the taps the
        lesion pattern modulates by Eq. 5, with the scores of the pass before (Eqs. 1-4)."""
        modulated = parse_lesion(self.lesion if lesion is None else lesion, self.taps)
        with torch.no_grad():
            logits, acts = self.backbone.run(x)
        for _ in range(self.iterations):
            state = self.attention(acts, with_kq=return_state)  # Eqs. 1-4: global query q, scores a_l
            # the next pass applies Eq. 5 to tap l as the backbone reaches it: X_l' = X_l ⊙ (1 + α_l · a_l)
            transforms = [self._modulation(i, a) if on else None
                          for i, (a, on) in enumerate(zip(state.scores, modulated))]
            del acts  # in eval nothing holds them any more: the next pass can reuse their memory
            logits, acts = self.backbone.run(x, transforms)
        return (logits, state) if return_state else logits

    def _modulation(self, i: int, score: Tensor, inplace: bool = True) -> Callable[[Tensor], Tensor]:
        """Tap i's transform for `backbone.run`: `modulate` with α_i and the scores a_i; `inplace` lets it
        scale a fresh activation in place where that gives the same numbers."""
        alpha = self.attention.alpha[i]
        return lambda act: modulate(act, alpha, score, inplace)

    @torch.no_grad()
    def baseline(self, x: Tensor) -> Tensor:
        """The plain backbone's logits."""
        return self.backbone(x)

    def attention_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters: W_k, W_q (+ biases, norms) and α."""
        return [p for p in self.attention.parameters() if p.requires_grad]


def modulate(x: Tensor, alpha: Tensor, score: Tensor, inplace: bool = False) -> Tensor:
    """Eq. 5 for one tap, X' = X ⊙ (1 + α · a). `inplace` writes X' over X when that gives the same
    tensor: nothing will backpropagate through it and X already has the result's dtype."""
    a = score.unsqueeze(1) if score.dim() == 3 else score  # a conv tap's map (B, H, W) broadcasts over channels
    gain = 1 + alpha * a  # Eq. 5: X' = X ⊙ (1 + α · a)
    if inplace and not torch.is_grad_enabled() and x.dtype == gain.dtype:
        return x.mul_(gain)
    return x * gain
