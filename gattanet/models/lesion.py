"""Lesion patterns: one character per tap, 'c'/'d' for a modulated conv/dense tap, '.' for an unmodulated one."""

from collections.abc import Sequence

from gattanet.models.taps import Tap

LETTER = {"conv": "c", "dense": "d"}


def full_pattern(taps: Sequence[Tap]) -> str:
    """Every tap modulated, e.g. 'cccdd' for the toy CNN."""
    return "".join(LETTER[t.kind] for t in taps)


def parse_lesion(pattern: str | None, taps: Sequence[Tap]) -> list[bool]:
    """Which taps are modulated; None means all. Raises ValueError naming the bad position."""
    full = full_pattern(taps)
    if pattern is None:
        return [True] * len(taps)
    if not isinstance(pattern, str):
        raise ValueError(f"lesion must be a string like {full!r} or None, got {type(pattern).__name__}")
    if len(pattern) != len(taps):
        raise ValueError(f"lesion {pattern!r} has {len(pattern)} characters but there are {len(taps)} taps "
                         f"({', '.join(t.name for t in taps)}); e.g. {full!r} (all) or {'.' * len(taps)!r} (none)")
    for i, (ch, tap) in enumerate(zip(pattern, taps)):
        if ch not in (LETTER[tap.kind], "."):
            raise ValueError(f"lesion {pattern!r}: position {i} ({tap.name}, a {tap.kind} tap) must be "
                             f"{LETTER[tap.kind]!r} or '.'")
    return [ch != "." for ch in pattern]


def ablation_patterns(taps: Sequence[Tap]) -> list[dict]:
    """The paper's Fig. 4c set: none, full, each layer ablated, each layer alone (layer = tap name or None)."""
    full = full_pattern(taps)
    none = "." * len(full)
    rows = [{"pattern": none, "kind": "none", "layer": None}, {"pattern": full, "kind": "full", "layer": None}]
    rows += [{"pattern": full[:i] + "." + full[i + 1:], "kind": "ablate", "layer": t.name} for i, t in enumerate(taps)]
    rows += [{"pattern": none[:i] + full[i] + none[i + 1:], "kind": "alone", "layer": t.name}
             for i, t in enumerate(taps)]
    return rows
