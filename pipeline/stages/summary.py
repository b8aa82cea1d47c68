"""summary: this run's Table 1 as a DVC metric (reports/summary.json), one row per attention run:
accuracies (mean over seeds) and the clean gain with its 95 % CI."""

import pandas as pd

from gattanet.io import read_json, write_json
from pipeline.paths import REPORTS, RESULTS


def run(params) -> None:
    rows = []
    for key in params.attention:
        m = read_json(RESULTS / "train-attn" / key / "metrics.json")
        rows.append({"run": key, "backbone": m["arch"], "dataset": m["dataset"], "attn_dim": m["attn_dim"],
                     "seeds": len(m["seeds"]), "backbone_params": m["backbone_params"],
                     "attention_params": m["attention_params"], "baseline_acc": m["baseline_acc"],
                     "gattanet_acc": m["gattanet_acc"], "gain": m["gain"]["mean"],
                     "gain_ci_low": m["gain"]["low"], "gain_ci_high": m["gain"]["high"]})
    table = pd.DataFrame(rows).round(6)
    write_json(REPORTS / "summary.json", {"rows": table.to_dict(orient="records")})
