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
    from pipeline.report.load import load_outputs
    from pipeline.stages import clear_folder_outputs

    plan = load_plan()  # a bad analysis plan, or a missing stage output, is refused before the last report's figures go
    out = load_outputs(params, Path("."), plan)
    index = build_report(params, plan, out, REPORTS, collect_provenance(Path("."), params, out),
                         before_write=lambda: clear_folder_outputs("report", None))
    print(f"report: {index.resolve().as_uri()}")
