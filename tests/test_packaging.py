"""pyproject.toml declares exactly what gattanet/ and pipeline/ import, and requirements.txt pins it all.

The wheel itself (built, installed into a clean venv, gattanet-cli run outside the checkout) is
checked by scripts/check_wheel.sh (`make package-check`, run by .ci/run): it takes minutes."""

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from tests.helpers import ROOT

SOURCES = ("gattanet", "pipeline")
# Declared dependencies that no module imports, each with the reason it is declared anyway.
RUNTIME_ONLY: dict[str, str] = {}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    return canonical(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec).group(1))


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def imported_modules() -> dict[str, set[str]]:
    """Top-level module -> the files importing it (absolute imports only; stdlib and our own left out)."""
    found: dict[str, set[str]] = {}
    for package in SOURCES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in SOURCES:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_declared_dependencies_are_exactly_the_imported_ones():
    dists = packages_distributions()
    imported: dict[str, set[str]] = {}
    unknown = {}
    for module, files in imported_modules().items():
        if module not in dists:
            unknown[module] = sorted(files)
            continue
        for dist in dists[module]:
            imported.setdefault(canonical(dist), set()).update(files)
    assert not unknown, f"imported but installed by no distribution in this environment: {unknown}"
    assert set(imported) >= {"torch", "typer", "numpy"}, imported  # the walk found the real imports
    declared = {requirement_name(spec) for spec in pyproject()["project"]["dependencies"]}
    missing = {dist: sorted(files) for dist, files in imported.items() if dist not in declared}
    assert not missing, f"imported but not in [project] dependencies of pyproject.toml: {missing}"
    unused = declared - set(imported) - set(RUNTIME_ONLY)
    assert not unused, f"declared in pyproject.toml but imported nowhere in {SOURCES}: {sorted(unused)}"


def test_every_declared_dependency_is_pinned_in_requirements():
    project = pyproject()["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            assert "==" in line, f"requirements.txt: {line!r} is not pinned with =="
            name, version = line.split("==", 1)
            pins[canonical(name)] = version.strip()
    unpinned = sorted({requirement_name(s) for s in specs} - set(pins))
    assert not unpinned, f"declared in pyproject.toml but not pinned in requirements.txt: {unpinned}"
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"


def test_the_pins_satisfy_the_declared_ranges():
    from packaging.requirements import Requirement

    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().split()
                if "==" in line)
    pins = {canonical(k): v for k, v in pins.items()}
    project = pyproject()["project"]
    specs = project["dependencies"] + [s for extra in project["optional-dependencies"].values() for s in extra]
    for spec in specs:
        req = Requirement(spec)
        assert req.specifier.contains(pins[canonical(req.name)]), f"{spec} excludes the pinned {pins[req.name]}"


def test_profiles_are_package_data():
    from pipeline.profiles import PROFILES, available

    assert PROFILES == ROOT / "pipeline" / "profiles"
    assert set(available()) >= {"default", "full", "paper", "tiny"}
    globs = pyproject()["tool"]["setuptools"]["package-data"]["pipeline"]
    assert "profiles/*.yaml" in globs
    assert not (ROOT / "profiles").exists(), "the profiles live in pipeline/profiles/ now"
