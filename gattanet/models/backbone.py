"""The backbone protocol: `Backbone` (the network as one segment per tap; `run` with per-tap
transforms, `resume`, taps from a dry run) and `Transform`, the callable that rewrites a tap."""

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from gattanet.models.taps import Tap

Transform = Callable[[Tensor], Tensor] | None


class Backbone(nn.Module):
    """Base of every backbone: subclasses set the attributes below and implement `segments`."""

    arch: str
    in_channels: int
    num_classes: int
    input_size: int
    tap_names: tuple[str, ...]

    def segments(self) -> list[Callable[[Tensor], Tensor]]:
        """f_i for every tap i: the network from the input (i = 0) or from tap i−1's output to tap i's
        activation. The last tap is the logits. Subclasses define the network here."""
        raise NotImplementedError(f"{type(self).__name__} must implement segments()")

    def run(self, x: Tensor, transforms: Sequence[Transform] | None = None) -> tuple[Tensor, list[Tensor]]:
        """Logits and the tapped activations; transforms[i] rewrites tap i before the network goes on."""
        transforms = self._transforms(transforms)
        acts: list[Tensor] = []
        for f, t in zip(self.segments(), transforms):
            x = self._tap(f(x), t, acts)
        return x, acts

    def resume(self, tap: int, act: Tensor, transforms: Sequence[Transform] | None = None) -> Tensor:
        """The logits of a pass that equals an earlier one up to tap `tap`: `act` is that tap's activation
        as `run` recorded it without transforms, so the segments before it need not run again."""
        transforms = self._transforms(transforms)
        segments = self.segments()
        if not 0 <= tap < len(segments):
            raise ValueError(f"{self.arch}: tap {tap} out of range 0..{len(segments) - 1}")
        x = self._tap(act, transforms[tap], [])
        for f, t in zip(segments[tap + 1:], transforms[tap + 1:]):
            x = self._tap(f(x), t, [])
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.run(x)[0]

    @torch.no_grad()
    def taps(self, input_shape: Sequence[int] | None = None) -> list[Tap]:
        """The taps in order, measured by a dry run on zeros (eval mode, so BN statistics stay put)."""
        shape = tuple(input_shape) if input_shape is not None else (
            self.in_channels, self.input_size, self.input_size)
        weight = next(self.parameters())
        was_training = self.training
        self.eval()
        try:
            _, acts = self.run(torch.zeros(1, *shape, device=weight.device, dtype=weight.dtype))
        finally:
            self.train(was_training)
        return [Tap(name, "conv" if a.dim() == 4 else "dense", tuple(a.shape[1:]))
                for name, a in zip(self.tap_names, acts)]

    def _transforms(self, transforms: Sequence[Transform] | None) -> list[Transform]:
        if transforms is None:
            return [None] * len(self.tap_names)
        if len(transforms) != len(self.tap_names):
            raise ValueError(f"{self.arch}: got {len(transforms)} transforms for "
                             f"{len(self.tap_names)} taps ({', '.join(self.tap_names)})")
        return list(transforms)

    @staticmethod
    def _tap(x: Tensor, transform: Transform, acts: list[Tensor]) -> Tensor:
        """Apply a tap's transform (if any), record the result, and hand it on."""
        if transform is not None:
            x = transform(x)
        acts.append(x)
        return x
