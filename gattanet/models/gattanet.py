"""GAttANet: a backbone run twice (or T+1 times); the attention scores of one pass scale the tapped
activations of the next, X' = X ⊙ (1 + α_l · a_l) (Eq. 5, `modulate`).

Settings beyond the paper (each default is the paper's and runs its code, with the same random draws):
- `iterations` T: passes 2 .. T+1 are modulated, pass t+1 by the scores a^(t) computed (Eqs. 1-4) from the
  tapped activations of pass t, as that pass modulated them: X_l^(t+1)' = X_l^(t+1) ⊙ (1 + α_l · a_l^(t));
  the logits are those of pass T+1. T = 1 is the paper.
- several heads (`GlobalAttention.heads` H): Eq. 5 sums the heads' modulations, each with its own α,
  X' = X ⊙ (1 + Σ_h α_{l,h} · a_{l,h}); with d/H features per head and all α_{l,h} = α_l this is the
  single-head model with the same W_k, W_q (q · k = Σ_h q_h · k_h), so H heads contain the paper's model.
- a top-down query (`GlobalAttention.query`): pass t's logits are the evidence of pass t+1's global query.
- `finetune`: the backbone trains too (its parameters require gradients, it follows train()/eval(), and
  the first pass is differentiated), in `backbone_parameters()`; the paper keeps it frozen.
"""

from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import Tensor, nn

from gattanet.models.attention import AttentionState, GlobalAttention
from gattanet.models.backbone import Backbone
from gattanet.models.lesion import full_pattern, parse_lesion
from gattanet.models.spec import PAPER, AttentionSpec


class GAttANet(nn.Module):
    """Backbone (frozen and always in eval mode, unless `finetune`) + global attention (the trainable part)."""

    def __init__(self, backbone: Backbone, attention: GlobalAttention, lesion: str | None = None,
                 iterations: int = PAPER["iterations"], finetune: bool = PAPER["finetune"]):
        super().__init__()
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
        self.backbone, self.attention, self.iterations = backbone, attention, iterations
        self.finetune = bool(finetune)
        self.taps = backbone.taps()
        got = [(t.name, t.kind, t.channels) for t in attention.taps]
        want = [(t.name, t.kind, t.channels) for t in self.taps]
        if got != want:
            raise ValueError(f"attention was built for taps {got} but the {backbone.arch} backbone has {want}")
        for p in backbone.parameters():
            p.requires_grad_(self.finetune)
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
        """The attention follows `mode`; the frozen backbone stays in eval (dropout off, BN stats fixed), a
        fine-tuned one follows `mode` too."""
        self.training = mode
        self.attention.train(mode)
        if self.finetune:
            self.backbone.train(mode)
        else:
            self.backbone.eval()
        return self

    def forward(self, x: Tensor, lesion: str | None = None,
                return_state: bool = False) -> Tensor | tuple[Tensor, AttentionState]:
        """Logits of the last pass: pass 1 is the plain backbone, each further pass rescales the taps the
        lesion pattern modulates by Eq. 5, with the scores of the pass before (Eqs. 1-4)."""
        modulated = parse_lesion(self.lesion if lesion is None else lesion, self.taps)
        with nullcontext() if self.finetune else torch.no_grad():
            logits, acts = self.backbone.run(x)
        for _ in range(self.iterations):
            # Eqs. 1-4: global query q, scores a_l (a top-down query is made of the pass's logits)
            state = self.attention(acts, with_kq=return_state, evidence=logits)
            # the next pass applies Eq. 5 to tap l as the backbone reaches it: X_l' = X_l ⊙ (1 + α_l · a_l)
            transforms = [self._modulation(i, a) if on else None
                          for i, (a, on) in enumerate(zip(state.scores, modulated))]
            del acts  # in eval nothing holds them any more: the next pass can reuse their memory
            logits, acts = self.backbone.run(x, transforms)
        return (logits, state) if return_state else logits

    def _modulation(self, i: int, score: Tensor, inplace: bool = True) -> Callable[[Tensor], Tensor]:
        """Tap i's transform for `backbone.run`: `modulate` with α_i and the scores a_i (`modulate_heads`
        with several heads); `inplace` lets it scale a fresh activation in place where that gives the same numbers."""
        alpha = self.attention.alpha[i]
        if self.attention.heads > 1:
            return lambda act: modulate_heads(act, alpha, score, inplace)
        return lambda act: modulate(act, alpha, score, inplace)

    @property
    def shares_first_pass(self) -> bool:
        """Whether gattanet.engine.fast_eval's shared evaluation computes this model (AttentionSpec.shares_first_pass)."""
        return AttentionSpec.of(self).shares_first_pass

    @torch.no_grad()
    def baseline(self, x: Tensor) -> Tensor:
        """The plain backbone's logits."""
        return self.backbone(x)

    def attention_parameters(self) -> list[nn.Parameter]:
        """The attention's trainable parameters: W_k, W_q (+ biases, norms), α (and a top-down query's E)."""
        return [p for p in self.attention.parameters() if p.requires_grad]

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The backbone's trainable parameters: all of them when fine-tuned, none when frozen (the paper)."""
        return [p for p in self.backbone.parameters() if p.requires_grad] if self.finetune else []


def modulate(x: Tensor, alpha: Tensor, score: Tensor, inplace: bool = False) -> Tensor:
    """Eq. 5 for one tap, X' = X ⊙ (1 + α · a). `inplace` writes X' over X when that gives the same
    tensor: nothing will backpropagate through it and X already has the result's dtype."""
    a = score.unsqueeze(1) if score.dim() == 3 else score  # a conv tap's map (B, H, W) broadcasts over channels
    gain = 1 + alpha * a  # Eq. 5: X' = X ⊙ (1 + α · a)
    return _scaled(x, gain, inplace)


def modulate_heads(x: Tensor, alpha: Tensor, scores: Tensor, inplace: bool = False) -> Tensor:
    """Eq. 5 for one tap with H heads, X' = X ⊙ (1 + Σ_h α_h · a_h): α (H,), scores conv (B, H, h, w) or dense
    (B, H, N)."""
    m = torch.einsum("bg...,g->b...", scores, alpha.to(scores.dtype))  # Σ_h α_h · a_h
    a = m.unsqueeze(1) if m.dim() == 3 else m  # a conv map broadcasts over channels
    return _scaled(x, 1 + a, inplace)


def _scaled(x: Tensor, gain: Tensor, inplace: bool) -> Tensor:
    if inplace and not torch.is_grad_enabled() and x.dtype == gain.dtype:
        return x.mul_(gain)
    return x * gain
