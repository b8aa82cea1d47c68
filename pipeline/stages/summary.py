"""summary: this run's Table 1 as a DVC metric (reports/summary.json), one row per attention run."""

from gattanet.io import read_json, write_json
from pipeline.common import REPORTS, RESULTS


def run(params) -> None:
    rows = []
    for key in params.attention:
        m = read_json(RESULTS / "train-attn" / key / "metrics.json")
        rows.append({"run": key, "backbone": m["arch"], "dataset": m["dataset"], "attn_dim": m["attn_dim"],
                     "backbone_params": m["backbone_params"], "attention_params": m["attention_params"],
                     "baseline_acc": m["baseline_acc"], "gattanet_acc": m["gattanet_acc"],
                     "gain_p_value": m["paired_test"]["p_value"]})
    write_json(REPORTS / "summary.json", {"rows": rows})
