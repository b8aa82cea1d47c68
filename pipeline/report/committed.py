"""The profile runs committed under reports/<profile>/: their one-line headlines for the default report, and their
reports re-rendered from their committed outputs (`make rerender`: `python -m pipeline.report.committed [PROFILE...]`).

Not a gattanet-cli command: pipeline/cli.py is a code dependency of every stage, this module only of the report's.
"""

import sys
from html.parser import HTMLParser
from pathlib import Path

from gattanet.errors import InputError
from pipeline.errors import ParamsError

from .analysis_plan import AnalysisPlan, load_plan

HEADLINE_META = "gattanet-headline"  # <meta name=... content=...>: a report's one-line headline
NO_HEADLINE = "a report from before the summary, which cannot be re-rendered from its committed files: docs/RUNS.md"


class _Headline(HTMLParser):
    """The content of a page's headline <meta>, if any."""

    def __init__(self, html: str):
        super().__init__()
        self.headline = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "meta" and a.get("name") == HEADLINE_META:
            self.headline = a.get("content")


def committed_runs(reports: Path) -> list[dict]:
    """Every reports/<profile>/ with a params.yaml and an index.html: its profile, link and one-line headline."""
    runs = []
    for folder in sorted(p.parent for p in Path(reports).glob("*/params.yaml")):
        index = folder / "index.html"
        if index.exists():
            headline = _Headline(index.read_text()).headline
            runs.append({"profile": folder.name, "href": f"{folder.name}/index.html",
                         "headline": headline or NO_HEADLINE})
    return runs


def rerender(folder: Path, root: Path, plan: AnalysisPlan) -> Path:
    """reports/<profile>/index.html and figures rebuilt from the params.yaml (validated, as a run's) and results/
    committed there, under `plan`. A run that committed only its own outputs (no results/train-attn: the extensions
    profile, made beside a default run whose outputs are not committed) cannot be: InputError, and its report stays as
    it was made."""
    from pipeline.config import load_params

    from .build import build_report, collect_provenance, git_commit
    from .load import load_outputs

    folder, root = Path(folder), Path(root)
    if not (folder / "results" / "train-attn").is_dir():
        raise InputError(f"{folder}: its attention runs' outputs (results/train-attn/) are not committed there, so its "
                         "report cannot be re-rendered from committed files; it stays as it was made")
    params = load_params(folder / "params.yaml")
    out = load_outputs(params, folder, plan)
    provenance = collect_provenance(folder, params, out)
    provenance["commit"] = (f"{git_commit(root)} (re-rendered from the outputs committed under reports/{folder.name}/; "
                            "the run's own commit and machine: docs/RUNS.md)")
    provenance["cpu"] = "not recorded with the outputs (the run's machine: docs/RUNS.md)"
    return build_report(params, plan, out, folder, provenance)


def main(names: list[str], reports: Path = Path("reports")) -> int:
    """Re-render the named profiles' reports (default: every reports/<profile>/ with a params.yaml); a named one that
    cannot be re-rendered is an error, an unnamed one is skipped with the reason. A committed params.yaml that no
    longer validates is an error either way (the validation is not loosened for old runs)."""
    folders = [reports / n for n in names] if names else sorted(p.parent for p in reports.glob("*/params.yaml"))
    plan, failed = load_plan(), 0
    for folder in folders:
        try:
            if not (folder / "params.yaml").exists():
                raise InputError(f"{folder}: no params.yaml there: not a committed profile run")
            print(f"{folder.name}: {rerender(folder, Path('.'), plan).resolve().as_uri()}")
        except InputError as e:
            print(f"{'error' if names else 'skipped'}: {e}", file=sys.stderr)
            failed += bool(names)
        except ParamsError as e:
            print(f"error: {folder / 'params.yaml'}: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
