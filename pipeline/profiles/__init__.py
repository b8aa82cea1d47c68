"""Named params profiles (pipeline/profiles/NAME.yaml, package data): switch params.yaml to one, say what changed."""

from __future__ import annotations

from pathlib import Path


from gattanet.io import write_text
from pipeline.config import ParamsError, read_yaml, validate

PROFILES = Path(__file__).resolve().parent  # the YAML files sit beside this module (package data)


def available() -> list[str]:
    return sorted(p.stem for p in PROFILES.glob("*.yaml"))


def diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """What changed: whole entries added (+) or removed (-), and changed values (~) inside common ones."""
    lines = []
    for k in old.keys() | new.keys():
        key = f"{prefix}{k}"
        if k not in new:
            lines.append(f"- {key}")
        elif k not in old:
            lines.append(f"+ {key}")
        elif isinstance(old[k], dict) and isinstance(new[k], dict):
            lines += diff(old[k], new[k], key + ".")
        elif old[k] != new[k]:
            lines.append(f"~ {key}: {old[k]!r} -> {new[k]!r}")
    return sorted(lines, key=lambda line: line[2:])


def switch_profile(name: str, params_path: Path, console) -> None:
    """Replace params_path with pipeline/profiles/<name>.yaml (validated first) and print the changes."""
    source = PROFILES / f"{name}.yaml"
    if not source.exists():
        raise ParamsError(f"profile: {name!r} is not a profile; allowed: {', '.join(available())}")
    text = source.read_text()
    new = read_yaml(text)
    validate(new)
    old = read_yaml(params_path.read_text()) if params_path.exists() else {}
    changes = diff(old or {}, new)
    write_text(params_path, text)
    console.print(f"{params_path}: now the [bold]{name}[/] profile ({len(changes)} changes)")
    for line in changes[:60]:
        console.print(f"  {line}", highlight=False, markup=False)
    if len(changes) > 60:
        console.print(f"  … and {len(changes) - 60} more (see `dvc params diff`)")
