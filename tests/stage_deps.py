"""The project files each DVC stage runs, found by walking imports; `python -m tests.stage_deps`
prints them as dvc.yaml `deps` lines (what tests/test_stage_deps.py holds dvc.yaml to), and
`python -m tests.stage_deps --write` puts them into dvc.yaml in place of the .py lines there. The rest of a
stage that pipeline/stages/registry.py knows (foreach source, command, outputs) is `registry_skeleton`, which
tests/test_stage_deps.py holds dvc.yaml's `dvc_skeleton` to.

A stage runs `gattanet-cli stage NAME`: pipeline/cli.py (only its module-level imports run; its other
commands import lazily), the stage runner pipeline/stages/__init__.py, and pipeline/stages/NAME.py;
from those, every import of a project module is followed, lazy ones (inside functions) included, except
those inside a stage module's `work()`: `gattanet-cli plan` calls it, the stage never does.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gattanet", "pipeline")
ENTRY = "pipeline/cli.py"
RUNNER = "pipeline/stages/__init__.py"


def module_file(name: str) -> str | None:
    """gattanet.x.y -> gattanet/x/y.py (or its package's __init__.py); None outside the project."""
    if name.split(".")[0] not in PACKAGES:
        return None
    path = ROOT / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate.relative_to(ROOT).as_posix()
    return None


def _package_inits(rel: str) -> set[str]:
    """The __init__.py of every package above a module: importing it runs them."""
    parts = Path(rel).parts[:-1]
    return {Path(*parts[:i], "__init__.py").as_posix() for i in range(1, len(parts) + 1)
            if (ROOT / Path(*parts[:i], "__init__.py")).exists()}


def imported_files(rel: str, module_level_only: bool = False) -> set[str]:
    """Project files that `rel` imports (with `from pkg import name`, name may be a submodule)."""
    tree = ast.parse((ROOT / rel).read_text(), rel)
    if rel.startswith("pipeline/stages/"):  # a stage's work() is the plan's (gattanet-cli plan), never the stage's
        tree.body = [n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name == "work")]
    nodes = tree.body if module_level_only else ast.walk(tree)
    package = ".".join(Path(rel).with_suffix("").parts[:-1]) if not rel.endswith("__init__.py") \
        else ".".join(Path(rel).parts[:-1])
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            f = module_file(name)
            if f is not None:
                found |= {f} | _package_inits(f)
    return found


def closure(roots: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        todo += sorted(imported_files(rel) - seen)
    return seen


def stage_files(module: str) -> set[str]:
    """Every project .py file that `gattanet-cli stage` runs for the stage in pipeline/stages/MODULE.py."""
    entry = {ENTRY} | _package_inits(ENTRY)
    return entry | closure(imported_files(ENTRY, module_level_only=True) | {RUNNER, f"pipeline/stages/{module}.py"})


def rewrite(text: str, files: dict[str, set[str]]) -> str:
    """dvc.yaml `text` with each stage's project .py deps replaced by `files[stage]`, sorted, where the
    first of them was; its other deps (data, templates, the params stamp) stay as they are."""
    out, stage, in_deps = [], None, False
    for line in text.split("\n"):
        top = re.match(r"^  ([a-z][a-z-]*):\s*(#.*)?$", line)
        if top:
            stage, in_deps = top.group(1), False
        item = re.match(r"^(\s+)- ((?:gattanet|pipeline)/\S+\.py)\s*$", line)
        if in_deps and item:
            if in_deps == "first":
                out += [f"{item.group(1)}- {f}" for f in sorted(files[stage])]
                in_deps = True
            continue
        if re.match(r"^\s+deps:\s*$", line) and stage in files:
            in_deps = "first"
        elif in_deps and not re.match(r"^\s+- ", line):
            in_deps = False
        out.append(line)
    return "\n".join(out)


def key_variable(foreach: str, params: dict) -> str:
    """dvc.yaml's name for a stage's KEY: `${item}` for a foreach over a list in `params`, `${key}` over a dict."""
    value = params
    for part in foreach.split("."):
        value = (value or {}).get(part)
    return "${item}" if isinstance(value, list) else "${key}"


def registry_skeleton(stage, params: dict) -> dict:
    """What dvc.yaml must say of `stage` (a pipeline/stages/registry.py record) beyond its deps and params: its
    foreach source, its command, and its outputs by section (sorted)."""
    var = key_variable(stage.foreach, params) if stage.keyed else ""
    return {"foreach": "${%s}" % stage.foreach if stage.keyed else None,
            "cmd": f"gattanet-cli stage {stage.name} {var}".rstrip(),
            **{section: sorted(p.replace("{key}", var) for p in getattr(stage, section))
               for section in ("outs", "metrics", "plots")}}


def dvc_skeleton(body: dict) -> dict:
    """The same of a dvc.yaml stage `body`."""
    do = body.get("do", body)
    return {"foreach": body.get("foreach"), "cmd": do.get("cmd"),
            **{section: sorted(next(iter(o)) if isinstance(o, dict) else o for o in do.get(section, []))
               for section in ("outs", "metrics", "plots")}}


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from pipeline.stages import STAGES

    files = {name: stage_files(stage.module) for name, stage in STAGES.items()}
    if sys.argv[1:] == ["--write"]:
        path = ROOT / "dvc.yaml"
        path.write_text(rewrite(path.read_text(), files))
        return
    for name in STAGES:
        print(f"{name}:")
        for f in sorted(files[name]):
            print(f"  - {f}")


if __name__ == "__main__":
    main()
