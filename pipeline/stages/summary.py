"""summary: this run's Table 1 as a DVC metric (reports/summary.json), one row per attention run:
accuracies (mean over seeds) and the clean gain with its 95 % CI."""

import pandas as pd

from gattanet.io import read_json, write_json
from pipeline import outputs


def work(params, key=None) -> list:
    """No model passes: it reads the train-attn metrics."""
    from pipeline.work import no_model

    return no_model("summary", None, "reads results (no model)")


def run(params) -> None:
    rows = []
    for key in params.attention:
        m = read_json(outputs.TRAIN_ATTN_METRICS.path(key))
        rows.append({"run": key, "backbone": m["arch"], "dataset": m["dataset"], "attn_dim": m["attn_dim"],
                     "seeds": len(m["seeds"]), "backbone_params": m["backbone_params"],
                     "attention_params": m["attention_params"], "baseline_acc": m["baseline_acc"],
                     "gattanet_acc": m["gattanet_acc"], "gain": m["gain"]["mean"],
                     "gain_ci_low": m["gain"]["low"], "gain_ci_high": m["gain"]["high"]})
    table = pd.DataFrame(rows).round(6)
    write_json(outputs.SUMMARY.path(), outputs.SUMMARY.record({"rows": table.to_dict(orient="records")}))
