"""dims: the attention-dimension comparison (Table 1, Fig. 4b): clean and noisy accuracy per d, per backbone run."""

from gattanet.io import read_json, write_csv, write_json
from pipeline.common import RESULTS

COLUMNS = ["run", "backbone_run", "arch", "dataset", "attn_dim", "attention_params", "baseline_acc",
           "gattanet_acc", "peak_sigma", "baseline_at_peak", "gattanet_at_peak"]


def run(params) -> None:
    rows = []
    for key in params.attention:
        m = read_json(RESULTS / "train-attn" / key / "metrics.json")
        s = read_json(RESULTS / "noise" / key / "sweep.json")
        i = s["sigmas"].index(s["peak"]["sigma"])
        rows.append({"run": key, "backbone_run": m["backbone_run"], "arch": m["arch"], "dataset": m["dataset"],
                     "attn_dim": m["attn_dim"], "attention_params": m["attention_params"],
                     "baseline_acc": m["baseline_acc"], "gattanet_acc": m["gattanet_acc"],
                     "peak_sigma": s["peak"]["sigma"], "baseline_at_peak": s["baseline"]["mean"][i],
                     "gattanet_at_peak": s["gattanet"]["mean"][i]})
    rows.sort(key=lambda r: (r["backbone_run"], r["attn_dim"], r["run"]))
    write_json(RESULTS / "dims.json", {"rows": rows})
    write_csv(RESULTS / "dims.csv", rows, COLUMNS)
