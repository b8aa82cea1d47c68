"""Tap: a layer of the backbone that sends keys/queries to the attention system and is modulated."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Tap:
    name: str
    kind: str  # "conv" -> shape (C, H, W); "dense" -> shape (N,)
    shape: tuple[int, ...]

    @property
    def channels(self) -> int:
        return self.shape[0]

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape)}
