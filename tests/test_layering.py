"""The library's arrows point one way: models/ and data/ import neither engine/ nor adapters/ (nor build.py, which
sits above models/ and adapters/), and nothing in gattanet/ imports pipeline/ (the library never knows DVC or params)."""

import ast
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[1] / "gattanet"
BELOW = {"models": ("gattanet.engine", "gattanet.adapters", "gattanet.build"),
         "data": ("gattanet.engine", "gattanet.adapters", "gattanet.build", "gattanet.models")}


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function (relative imports resolved)."""
    package = ".".join(path.relative_to(LIBRARY.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module) if p)
            found |= {module} | {f"{module}.{a.name}" for a in node.names}
    return found


def reaches(found: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in found if any(m == f or m.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("room", sorted(BELOW))
def test_lower_rooms_do_not_import_the_rooms_above(room):
    bad = {str(f.relative_to(LIBRARY.parent)): reaches(imports(f), BELOW[room]) for f in (LIBRARY / room).rglob("*.py")}
    assert not {f: m for f, m in bad.items() if m}


def test_the_library_never_imports_the_pipeline():
    bad = {str(f.relative_to(LIBRARY.parent)): reaches(imports(f), ("pipeline",)) for f in LIBRARY.rglob("*.py")}
    assert not {f: m for f, m in bad.items() if m}


def test_the_check_sees_an_import_inside_a_function():
    f = LIBRARY / "models" / "spec.py"  # imports gattanet.models.attention only inside methods
    assert "gattanet.models.attention.GlobalAttention" in imports(f)
