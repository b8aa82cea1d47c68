"""GAttANet: a frozen backbone run twice (or T+1 times); the attention scores of one pass scale the
tapped activations of the next, X' = X ⊙ (1 + α_l · a_l) (Eq. 5)."""

from collections.abc import Callable

import torch
from torch import Tensor, nn

from gattanet.attention import AttentionState, GlobalAttention
from gattanet.backbones import Backbone
from gattanet.lesion import full_pattern, parse_lesion


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
        modulated = parse_lesion(self.lesion if lesion is None else lesion, self.taps)
        with torch.no_grad():
            logits, acts = self.backbone.run(x)
        for _ in range(self.iterations):
            state = self.attention(acts, with_kq=return_state)
            transforms = [self._modulation(i, s) if on else None
                          for i, (s, on) in enumerate(zip(state.scores, modulated))]
            del acts  # in eval nothing holds them any more: the next pass can reuse their memory
            logits, acts = self.backbone.run(x, transforms)
        return (logits, state) if return_state else logits

    def _modulation(self, i: int, score: Tensor, inplace: bool = True) -> Callable[[Tensor], Tensor]:
        """Eq. 5 for tap i, X' = X ⊙ (1 + α_i · a_i); `inplace` lets eval mode scale a fresh activation in place."""
        alpha = self.attention.alpha[i]
        gain = 1 + alpha * (score.unsqueeze(1) if score.dim() == 3 else score)  # conv maps broadcast over C

        def modulate(act: Tensor) -> Tensor:
            if not inplace or torch.is_grad_enabled() or act.dtype != gain.dtype:
                return act * gain
            return act.mul_(gain)  # nothing will backpropagate: scale the fresh activation in place
        return modulate

    @torch.no_grad()
    def baseline(self, x: Tensor) -> Tensor:
        """The plain backbone's logits."""
        return self.backbone(x)

    def attention_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters: W_k, W_q (+ biases, norms) and α."""
        return [p for p in self.attention.parameters() if p.requires_grad]
