"""Re-render every committed profile run's report (reports/<profile>/index.html) from its own results/ and params.yaml
under the working directory's analysis plan: the per-image arrays are read, never changed. A run without its own
attention results (the extensions profile, whose default run was not committed beside it) is left as committed:
tests/test_recompute.py re-decides its extension rows from their arrays. Run from the repository root:
PYTHONPATH=$PWD python scripts/rerender_committed.py [--dry-run]."""

import sys
from pathlib import Path

import yaml

from pipeline.report.build import build_report, collect_provenance
from pipeline.report.claims import evaluate_claims
from pipeline.report.load import load_outputs, load_paper


def committed_runs(reports: Path = Path("reports")) -> list[Path]:
    """Each reports/<profile>/ holding a committed run (its params.yaml and results/)."""
    return sorted(p for p in reports.iterdir() if (p / "params.yaml").exists() and (p / "results").is_dir())


def headline(run: Path, params: dict) -> list[str]:
    """One line per claim: its verdict per backbone family."""
    claims = evaluate_claims(load_outputs(params, run), load_paper(), params)
    return [f"  {c.id}: {', '.join(f'{f} {v}' for f, v in c.overall.items()) or 'not run'}" for c in claims]


def main(dry_run: bool) -> None:
    for run in committed_runs():
        params = yaml.safe_load((run / "params.yaml").read_text())
        if not (run / "results" / "train-attn").is_dir():
            print(f"{run.name}: left as committed (no attention results of its own; its rows are re-decided by "
                  "tests/test_recompute.py)")
            continue
        print(run.name)
        print("\n".join(headline(run, params)))
        if not dry_run:
            build_report(params, run, run, collect_provenance(run, params))


if __name__ == "__main__":
    main("--dry-run" in sys.argv)
