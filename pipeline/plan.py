"""`gattanet-cli plan`: what every stage of a params file will compute, counted as the stages' code does
it, and its estimated time on this machine from measured throughputs (gattanet.cost.rates).

Counts follow the stages: the validation split carved from train (`val_fraction`), `train_subset` and
`test_subset` (0 = all), a validation pass after every epoch, `epochs` an upper bound (early stopping may
end sooner), the seeds of an attention run trained one after the other, and the shared first pass of
fast_eval wherever a stage uses it (train-attn's test, noise, lesions, embed, maps). Dataset sizes come
from data/NAME.pt when it is materialised, else from the datasets' standard sizes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from gattanet.cost import rates as cost
from gattanet.cost.rates import Work
from gattanet.engine.precision import autocast_dtype, precision_name
from pipeline.errors import UsageError
from pipeline.stages import STAGES, stage_entries
from pipeline.work import STANDARD_SIZES, Sizes, dataset_sizes

__all__ = ["STANDARD_SIZES", "build_works", "dataset_sizes", "make_plan", "render"]

BENCH_FIGURES = Path(".gattanet/bench.json")  # not a DVC output: writing it reruns nothing
NOT_INCLUDED = ("each stage's fixed costs: process start-up, loading data and checkpoints, resume files and "
                "checksums (seconds each)",
                "data loading and augmentation (for ImageNet, JPEG decoding by the loader's workers)",
                "k-NN and UMAP in embed",
                "the data, validate, dims, summary and report stages (no model passes)")

CPU_CLASS_WORDS = {
    "AVX512-BF16": "bf16 computed natively (the profiles' measured times are this class's).",
    "AVX-512": "no native bf16: the run computes in fp32.",
    "AVX2": "no native bf16: the run computes in fp32, about 4× slower per epoch than on an AVX512-BF16 CPU "
            "(the README gives the default's measured time on both).",
    "other": "no native bf16: the run computes in fp32."}
LEGEND = ("ep: epochs, each followed by a validation pass (val); ≤ E ep: at most E, early stopping may end "
          "sooner; a – b: from the earliest stop (1 + patience epochs) to the epoch limit; (1+n): the baseline and n GAttANets from one shared first pass (1+n×p: n models under p "
          "lesion patterns; 'own': each model its own forward). Image-passes: images × backbone passes "
          "(a GAttANet forward is 2; a training pass includes its backward; a modulated second pass counts "
          "whole).")


def entries(params, name: str) -> list[str | None]:
    """The entries `dvc repro` runs of stage `name`: its foreach keys in params (None for a single stage)."""
    keys = stage_entries(params, name)
    return [None] if keys is None else keys


def build_works(params) -> tuple[list[Work], dict[str, Sizes]]:
    """Every stage entry's work as its stage module's `work(params, key)` counts it, in the registry's order
    (pipeline/stages/registry.py), and the dataset sizes it was counted from."""
    works: list[Work] = []
    for stage in STAGES.values():
        code = stage.code()
        for key in entries(params, stage.name):
            works += (code.work(params, key) if hasattr(code, "work") else  # a stage still to be counted
                      [Work(stage.name, key, f"not counted: pipeline/stages/{stage.module}.py has no work()", 0)])
    return works, {name: dataset_sizes(params, name) for name in params.data}


# ---------------------------------------------------------------- device and figures


def plan_device(params, requested: str | None) -> tuple[torch.device, list[str]]:
    """The device the estimate is for: `requested` (--device) or params' `device`, on this machine. A CUDA
    device that params ask for but this machine lacks gives this machine's CPU, with a note."""
    want = requested or params.device
    notes = []
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu"), notes
    if want.startswith("cuda") and not torch.cuda.is_available():
        if requested:
            raise UsageError(f"--device {requested}: CUDA is not available on this machine; use auto or cpu")
        notes.append(f"params ask for device {want!r}, which this machine lacks: this is an estimate for its "
                     "CPU; run `gattanet-cli plan` on the GPU machine for that one")
        return torch.device("cpu"), notes
    index = want.removeprefix("cuda:") if want.startswith("cuda:") else "0"
    if want not in ("cpu", "cuda") and not (want.startswith("cuda:") and index.isdigit()):
        raise UsageError(f"--device {want!r}: allowed: auto | cpu | cuda | cuda:N")
    if want.startswith("cuda") and int(index) >= torch.cuda.device_count():
        raise UsageError(f"--device {want}: this machine has {torch.cuda.device_count()} GPUs; "
                         f"allowed: cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return torch.device(want), notes


def stale_entries(cwd: str | Path = ".") -> set[tuple[str, str | None]] | None:
    """The stage entries `dvc repro` would run now in `cwd`, as (stage, entry), from `dvc status --json`
    (`name@key` for a foreach entry); None where DVC is not installed or cannot say (no DVC project)."""
    import json
    import shutil
    import subprocess

    if shutil.which("dvc") is None:
        return None
    r = subprocess.run(["dvc", "status", "--json"], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        return None
    try:
        changed = json.loads(r.stdout or "{}")
    except json.JSONDecodeError:
        return None
    return {(name, key or None) for name, _, key in (s.partition("@") for s in changed)}


def make_plan(params, params_path: str | Path, device: str | None = None, figures_path: str | Path = BENCH_FIGURES,
              measure: bool = True, probe_seconds: float = 2.0, save: bool = False,
              progress: Callable[[str], None] | None = None,
              only: set[tuple[str, str | None]] | None = None) -> dict:
    """The plan as a JSON-able dict: every work item with its rate and estimated seconds, per-stage rows,
    the total, and where the rates come from. Rates missing from the figures file are measured now
    (`measure`), about `probe_seconds` each, and written back to it with `save`. `only`: just these
    (stage, entry) pairs (what `dvc repro` would run now, see `stale_entries`)."""
    dev, notes = plan_device(params, device)
    prec = precision_name(autocast_dtype(dev, params.amp))
    works, sizes = build_works(params)
    if only is not None:
        works = [w for w in works if (w.stage, w.entry) in only]
    machine = cost.machine_info(dev)
    figures, why = cost.load_figures(figures_path)
    file_info = {"path": str(figures_path), "saved": None, "used": False, "note": why}
    if figures is not None:
        file_info["saved"] = figures.saved
        if cost.same_machine(figures.machine, machine):
            file_info["used"] = True
        else:
            diff = ", ".join(f"{k} {figures.machine.get(k)!r} here {machine.get(k)!r}" for k in cost.MACHINE_KEYS
                             if figures.machine.get(k) != machine.get(k))
            file_info["note"] = f"measured on another machine or setting ({diff}): not used"
            figures = None
    if figures is None:
        figures = cost.Figures(machine)
    from_file = {p.key for p in cost.probes_of(works) if figures.get(dev, prec, p)}
    measured_now, t0, busy0 = [], time.perf_counter(), cost.busy_cpu_seconds()
    for probe in cost.probes_of(works):
        if probe.key in from_file or not measure:
            continue
        if progress:
            progress(f"measuring {probe.key} ...")
        figures.put(dev, prec, probe, cost.measure(probe, dev, params.amp, seconds=probe_seconds))
        measured_now.append(probe.key)
    measuring_seconds = time.perf_counter() - t0
    others = cost.other_cores(busy0, cost.busy_cpu_seconds(), measuring_seconds) if measured_now else None
    contended = others is not None and others >= cost.CONTENDED_CORES
    if contended:
        notes.append(f"other processes used {others:.1f} of this machine's {machine['cpu_count']} cores while the "
                     "rates were measured: they are slower than this machine alone gives, so the estimate is too "
                     "long" + (", and they were not saved" if save else ""))
    if save and measured_now and not contended:
        cost.save_figures(figures_path, figures)

    def rate_of(probe):
        record = figures.get(dev, prec, probe)
        if record is None:
            return None
        return dict(record, source="measured now" if probe.key in measured_now else f"{figures_path}")

    nproc = getattr(params, "nproc", 1)  # data-parallel processes of the training stages
    processes = nproc if dev.type == "cuda" else 1
    if nproc > 1:
        notes.append(f"nproc {nproc}: " + (
            f"training steps divided by {nproc} (ideal scaling, one GPU per process; validation runs whole "
            "on every process and is not divided)" if dev.type == "cuda" else
            "processes on the CPU share its cores, so no speed-up is assumed"))
    items = cost.estimate_seconds(works, rate_of, processes)
    used = [figures.get(dev, prec, p) for p in cost.probes_of(works)]
    used = [r for r in used if r and r.get("img_per_s")]
    dates = sorted(r["measured"] for r in used if r.get("measured"))
    smaller = sorted({i["probe"] for i in items if i["measured_batch"] and i["measured_batch"] < i["batch"]})
    rows = _stage_rows(items)
    missing = [i for i in items if i["probe"] is not None and i["seconds"] is None]
    total = sum(i["seconds"] for i in items if i["seconds"] is not None)
    least = sum(i["min_seconds"] for i in items if i["min_seconds"] is not None)
    return {
        "profile": params.profile, "params": str(params_path), "device": str(dev), "nproc": nproc,
        "scope": "every stage from scratch" if only is None else "the stages dvc repro would run now",
        "params_device": params.device, "precision": prec, "amp": params.amp, "machine": machine,
        "notes": notes, "estimate": True,
        "figures": {**file_info, "from_file": len(from_file), "measured_now": len(measured_now),
                    "measuring_seconds": round(measuring_seconds, 1), "probe_seconds": probe_seconds,
                    "saved_now": bool(save and measured_now and not contended),
                    "other_cores": None if others is None else round(others, 2),
                    "measured_from": dates[0] if dates else None, "measured_to": dates[-1] if dates else None,
                    "smaller_batch": smaller},
        "datasets": {k: vars(v) for k, v in sizes.items()},
        "rows": rows, "items": items,
        "total_seconds": total, "min_total_seconds": least, "complete": not missing, "not_measured": len(missing),
        "upper_bound": any(i["bound"] for i in items),
        "not_included": list(NOT_INCLUDED),
    }


def _stage_rows(items: list[dict]) -> list[dict]:
    """One row per stage entry (as `dvc repro` runs them): its items' work text, passes and seconds."""
    rows: dict[tuple, dict] = {}
    for i in items:
        r = rows.setdefault((i["stage"], i["entry"]), {
            "stage": i["stage"], "entry": i["entry"], "work": [], "image_passes": 0, "seconds": 0.0,
            "min_seconds": 0.0, "model_work": False, "complete": True, "bound": False})
        if i["what"]:
            r["work"].append(i["what"])
        r["image_passes"] += i["image_passes"]
        r["bound"] |= i["bound"]
        if i["probe"] is not None:
            r["model_work"] = True
            if i["seconds"] is None:
                r["complete"] = False
            else:
                r["seconds"] += i["seconds"]
                r["min_seconds"] += i["min_seconds"]
    for r in rows.values():
        if not r["model_work"]:
            r["seconds"] = r["min_seconds"] = None
    return list(rows.values())


# ---------------------------------------------------------------- text


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return "< 1 s"
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    if seconds < 3600 - 30:
        m, s = divmod(round(seconds), 60)
        return f"{m} min {s:02d} s"
    if seconds < 48 * 3600:
        h, m = divmod(round(seconds / 60), 60)
        return f"{h} h {m:02d} min"
    return f"{seconds / 86400:.1f} days"


def _span(least: float | None, most: float | None) -> str:
    """'a – b' when early stopping may end a training between its earliest epoch and the epoch limit."""
    if least is None or most is None or duration(least) == duration(most):
        return duration(most)
    return f"{duration(least)} – {duration(most)}"


def render_plan(plan: dict, out, detail: bool = False) -> None:
    """The plan as rich tables on console `out`: one row per stage entry and the total; with `detail`,
    every work item with its pass, rate and the batch it was measured at."""
    from rich.table import Table

    m, f = plan["machine"], plan["figures"]
    where = m["gpu"] or f"{m['cpu']}, {m['cpu_count']} cores"
    out.print(f"[bold]Cost plan[/] of profile [bold]{plan['profile']}[/] ({plan['params']}): an estimate, "
              f"not a measurement, for [bold]{plan['device']}[/] ({where}; {m['threads']} torch threads, "
              f"torch {m['torch']}), {plan['precision']}.", highlight=False)
    if plan["device"] == "cpu":
        cls = m.get("cpu_class", "other")
        out.print(f"CPU class: [bold]{cls}[/]: {CPU_CLASS_WORDS.get(cls, '')}", highlight=False)
    for note in plan["notes"]:
        out.print(f"[yellow]note:[/] {note}", highlight=False)
    t = Table("stage", "entry", "work", "image-passes", "estimated time",
              title=f"{plan['profile']}: {plan['scope']} ({plan['device']}, {plan['precision']})")
    for r in plan["rows"]:
        time_text = _span(r["min_seconds"], r["seconds"]) if r["complete"] else "not measured"
        t.add_row(r["stage"], r["entry"] or "", "; ".join(r["work"]),
                  f"{r['image_passes']:,}" if r["model_work"] else "—", time_text)
    total = _span(plan["min_total_seconds"], plan["total_seconds"]) if any(r["seconds"] for r in plan["rows"]) else None
    t.add_row("[bold]total[/]", "", "", f"{sum(r['image_passes'] for r in plan['rows']):,}",
              "not measured" if total is None else f"[bold]{total}[/]"
              + ("" if plan["complete"] else f" + {plan['not_measured']} items not measured"))
    out.print(t)
    if detail:
        d = Table("stage", "entry", "work item", "pass", "img/s", "batch", "time")
        for i in plan["items"]:
            if i["probe"] is None:
                continue
            rate = f"{i['img_per_s']:,.0f}" if i["img_per_s"] else (i["why_not"] or "—")
            d.add_row(i["stage"], i["entry"] or "", i["what"] or "(same check)", i["probe"], rate,
                      str(i["measured_batch"] or "—"), duration(i["seconds"]))
        out.print(d)
    src = []
    if f["from_file"]:
        src.append(f"{f['from_file']} from {f['path']}")
    if f["measured_now"]:
        src.append(f"{f['measured_now']} measured now, about {f['probe_seconds']:g} s each "
                   f"({f['measuring_seconds']:.0f} s in all)" + (f", saved to {f['path']}" if f["saved_now"] else ""))
    when = ""
    if f["measured_from"]:
        a, b = f["measured_from"].replace("T", " "), f["measured_to"].replace("T", " ")
        when = f", measured {a}" + (f" to {b[11:] if a[:10] == b[:10] else b}" if a != b else "")
    out.print("Rates (images/s of each kind of pass, from random images through freshly built models): "
              + ("; ".join(src) if src else "none") + when + ".", highlight=False)
    if f["smaller_batch"]:
        out.print(f"{len(f['smaller_batch'])} of them measured at a smaller batch than the params' (too slow for "
                  "the measuring time; `--detail` says which).", highlight=False)
    if f["note"] and not f["from_file"]:
        out.print(f"Figures file: {f['note']}.", highlight=False)
    if not plan["complete"]:
        out.print(f"[yellow]{plan['not_measured']} work items have no rate[/]: their time is left out of the "
                  "total (measure them with `gattanet-cli bench --plan --save`).", highlight=False)
    out.print(LEGEND + " Not included: " + "; ".join(plan["not_included"]) + ".", highlight=False)
