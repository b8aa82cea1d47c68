"""report: render reports/index.html from the stage outputs (no recomputation)."""

from pathlib import Path

from pipeline.paths import REPORTS


def run(params) -> None:
    from pipeline.report.build import build_report, collect_provenance

    index = build_report(params.raw, Path("."), REPORTS, collect_provenance(Path("."), params.raw))
    print(f"report: {index.resolve().as_uri()}")
