"""The report's tables: Table 1 beside the paper, dimensions, lesions, deviations, compute spent.

Rows are plain dicts of display strings (and a few flags) so the template only lays them out.
"""

import math

from .claims import pct, pts
from .load import Outputs

DATASET_LABELS = {"fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100",
                  "imagenet": "ImageNet-1k"}
ARCH_LABELS = {"toy": "toy model", "resnet18": "ResNet18", "resnet50": "ResNet50"}
PAPER_PROFILE_COMMAND = "gattanet-cli profile paper && dvc repro"


def count(n: int | None) -> str:
    """A parameter count as the paper prints it: 620362 -> '620.4K', 11689512 -> '11.69M'."""
    if n is None:
        return "—"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    return f"{n / 1e3:.1f}K" if n >= 1000 else str(n)


def dataset_label(name: str) -> str:
    return DATASET_LABELS.get(name, name)


def closest_paper_row(arch: str, dataset: str, dim: int, rows: list[dict]) -> dict | None:
    """The paper row with the same backbone, preferring the same dataset, then the nearest d (log scale)."""
    same_arch = [r for r in rows if r["arch"] == arch]
    pool = [r for r in same_arch if r["dataset"] == dataset] or same_arch
    if not pool:
        return None
    return min(pool, key=lambda r: min(abs(math.log(dim / d)) for d in r["attn_dims"]))


def paper_gain(row: dict) -> tuple[float | None, float | None]:
    """The paper's gain as (low, high): the stated range, or the difference of the two stated accuracies."""
    if row["gattanet_acc"] is not None:
        g = row["gattanet_acc"] - row["base_acc"]
        return g, g
    return row["gain"]["low"], row["gain"]["high"]


def compare_gain(ours: float, low: float | None, high: float | None) -> str:
    """Our gain against the paper's point value or range."""
    if low is not None and low == high:
        return pts(ours - low)
    if high is not None and ours > high:
        return f"{pts(ours - high)} above the paper's range"
    if low is not None and ours < low:
        return f"{pts(ours - low)} below the paper's range"
    return "within the paper's range"


def table1(out: Outputs, paper: dict) -> dict:
    """This run's rows beside the closest paper row, and the paper rows this profile did not run."""
    prow = paper["table1"]
    rows, stand_ins = [], {}
    for key, m in out.train_attn.items():
        ref = closest_paper_row(m["arch"], m["dataset"], m["attn_dim"], prow)
        gain = m["gattanet_acc"] - m["baseline_acc"]
        notes = []
        row = {"run": key, "backbone": ARCH_LABELS.get(m["arch"], m["arch"]), "dataset": dataset_label(m["dataset"]),
               "base_params": count(m["backbone_params"]), "base_acc": pct(m["baseline_acc"]),
               "attn_dim": str(m["attn_dim"]), "attn_params": count(m["attention_params"]),
               "gattanet_acc": pct(m["gattanet_acc"]), "gain": pts(gain), "gain_positive": gain > 0, "paper": None}
        if ref is not None:
            stand_ins.setdefault(ref["id"], []).append(key)
            if ref["dataset"] != m["dataset"]:
                notes.append(f"dataset substituted: {dataset_label(m['dataset'])} for {ref['dataset_label']}")
            if m["attn_dim"] not in ref["attn_dims"]:
                notes.append(f"d = {m['attn_dim']} is not among the paper's d for this row")
            low, high = paper_gain(ref)
            row["paper"] = {
                "label": f"{ref['backbone']}, {ref['dataset_label']}", "base_params": ref["base_params"],
                "base_acc": pct(ref["base_acc"]), "attn_dims": ", ".join(map(str, ref["attn_dims"])),
                "attn_params": ref["attn_params"] or "not stated", "gattanet_acc": pct(ref["gattanet_acc"]),
                "gain": ref["gain"]["text"],
                "d_base_acc": pts(m["baseline_acc"] - ref["base_acc"]),
                "d_gattanet_acc": (pts(m["gattanet_acc"] - ref["gattanet_acc"])
                                   if ref["gattanet_acc"] is not None else "—"),
                "d_gain": compare_gain(gain, low, high)}
        else:
            notes.append("no paper row with this backbone")
        row["notes"] = notes
        rows.append(row)
    ran = {(m["arch"], m["dataset"]) for m in out.train_attn.values()}
    not_run = [{"label": f"{r['backbone']}, {r['dataset_label']}", "base_acc": pct(r["base_acc"]),
                "attn_dims": ", ".join(map(str, r["attn_dims"])), "gain": r["gain"]["text"],
                "command": PAPER_PROFILE_COMMAND, "stand_ins": ", ".join(stand_ins.get(r["id"], []))}
               for r in prow if (r["arch"], r["dataset"]) not in ran]
    tv = paper["torchvision_baselines"]
    torchvision = [{"backbone": r["backbone"], "paper": pct(r["base_acc"]), "torchvision": pct(tv[r["arch"]]),
                    "diff": pts(tv[r["arch"]] - r["base_acc"])}
                   for r in prow if r["arch"] in tv and r["dataset"] == "imagenet"]
    return {"rows": rows, "not_run": not_run, "torchvision": torchvision, "torchvision_source": tv["source"]}


def dims_table(out: Outputs) -> list[dict]:
    """results/dims.json as display rows (empty when the stage did not run)."""
    if out.dims is None:
        return []
    rows = []
    for r in out.dims["rows"]:
        noisy = (r["gattanet_at_peak"] - r["baseline_at_peak"]) if r["peak_sigma"] is not None else None
        rows.append({"run": r["run"], "backbone": ARCH_LABELS.get(r["arch"], r["arch"]),
                     "dataset": dataset_label(r["dataset"]), "attn_dim": str(r["attn_dim"]),
                     "attn_params": count(r["attention_params"]), "baseline": pct(r["baseline_acc"]),
                     "gattanet": pct(r["gattanet_acc"]), "gain": pts(r["gattanet_acc"] - r["baseline_acc"]),
                     "peak_sigma": "—" if r["peak_sigma"] is None else f"{r['peak_sigma']:g}",
                     "baseline_at_peak": pct(r["baseline_at_peak"]), "gattanet_at_peak": pct(r["gattanet_at_peak"]),
                     "gain_at_peak": pts(noisy)})
    return rows


def lesion_tables(out: Outputs) -> list[dict]:
    """One table per lesion run: each pattern's accuracy against the baseline and the full model."""
    tables = []
    for key, les in out.lesions.items():
        rows = [{"pattern": p["pattern"], "kind": p["kind"], "layer": "" if p.get("layer") is None else str(p["layer"]),
                 "accuracy": pct(p["accuracy"]), "vs_baseline": pts(p["accuracy"] - les["baseline_acc"]),
                 "vs_full": pts(p["accuracy"] - les["full_acc"])} for p in les["patterns"]]
        tables.append({"run": key, "mode": les["mode"], "taps": ", ".join(les["taps"]), "rows": rows})
    return tables


def param_values(params: dict, path: str) -> list[tuple[str, object]]:
    """(label, value) pairs at a dotted params path; `*` expands every key of a dict."""
    found: list[tuple[str, object]] = [("", params)]
    for part in path.split("."):
        nxt = []
        for label, node in found:
            if not isinstance(node, dict):
                continue
            items = node.items() if part == "*" else ([(part, node[part])] if part in node else [])
            nxt += [(f"{label}.{k}" if label else str(k), v) for k, v in items]
        found = nxt
    return found


def deviations(paper: dict, params: dict) -> list[dict]:
    """paper.yaml's deviations that apply to these params, each with the params values behind it.

    An entry's `when` is {param, in: [values]} or {param, match: {key: value}} (for dicts)."""
    rows = []
    for d in paper["deviations"]:
        if d.get("when") and not _applies(d["when"], params):
            continue
        used = param_values(params, d["param"]) if d.get("param") else []
        rows.append({"topic": d["topic"], "paper": d["paper"], "here": d["here"],
                     "params": ", ".join(f"{k} = {_show(v)}" for k, v in used)})
    return rows


def _applies(when: dict, params: dict) -> bool:
    """True when some value at when["param"] is in when["in"], or is a dict matching all of when["match"]."""
    values = [v for _, v in param_values(params, when["param"])]
    if "in" in when:
        return any(_show(v) in map(_show, when["in"]) for v in values)
    return any(isinstance(v, dict) and all(_show(v.get(k)) == _show(x) for k, x in when["match"].items())
               for v in values)


def _show(v: object) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def stage_times(out: Outputs) -> list[dict]:
    """Every stage output's wall time (`seconds`) and device, in pipeline order."""
    rows = [{"stage": f"pretrain@{k}", "seconds": m["seconds"], "device": m["device"]} for k, m in out.pretrain.items()]
    rows += [{"stage": f"train-attn@{k}", "seconds": m["seconds"], "device": m["device"]}
             for k, m in out.train_attn.items()]
    rows += [{"stage": f"noise@{k}", "seconds": s["seconds"], "device": s.get("device")} for k, s in out.noise.items()]
    rows += [{"stage": f"lesions@{k}", "seconds": s["seconds"], "device": s.get("device")}
             for k, s in out.lesions.items()]
    rows += [{"stage": f"embed@{k}", "seconds": e["stats"]["seconds"], "device": e["stats"].get("device")}
             for k, e in out.embedding.items()]
    rows += [{"stage": f"maps@{k}", "seconds": m["stats"]["seconds"], "device": m["stats"].get("device")}
             for k, m in out.maps.items()]
    return rows
