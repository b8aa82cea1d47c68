"""report: render reports/index.html from the stage outputs (no recomputation)."""

from pathlib import Path

from pipeline.paths import REPORTS


def work(params, key=None) -> list:
    """No model passes: it renders the stage outputs."""
    from pipeline.work import no_model

    return no_model("report", None, "reads results (no model)")


def run(params) -> None:
    from pipeline.report.analysis_plan import load_plan
    from pipeline.report.build import build_report, collect_provenance
    from pipeline.stages import clear_folder_outputs

    load_plan()  # a bad analysis plan, or a missing stage output, is refused before the last report's figures go
    index = build_report(params.raw, Path("."), REPORTS, collect_provenance(Path("."), params.raw),
                         before_write=lambda: clear_folder_outputs("report", None))
    print(f"report: {index.resolve().as_uri()}")
