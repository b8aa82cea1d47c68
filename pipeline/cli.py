"""`gattanet-cli`: the Typer app. `stage <name>` runs one DVC stage; describe/bench/plan/profile/report help by hand."""

from __future__ import annotations

import json
import sys
import webbrowser
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from pipeline import profiles
from pipeline.errors import ParamsError, UsageError, exit_code, message
from pipeline.stages import STAGES, run_stage

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
stage_app = typer.Typer(help="Run one pipeline stage (what `dvc repro` calls).", no_args_is_help=True)
app.add_typer(stage_app, name="stage")
console = Console(stderr=True)

PARAMS_OPT = typer.Option(Path("params.yaml"), "--params", "-p", help="Params file to read.")
PLAN_PARAMS_OPT = typer.Option(Path("params.yaml"), "--params", "-p", help="Params file to read, or a profile's "
                               "file (pipeline/profiles/NAME.yaml: composed on default.yaml).")
SET_OPT = typer.Option(None, "--set", "-S", help="Override a param, e.g. -S attention.toy-fmnist-d16.epochs=2 (repeatable).")


DEBUG_ENV = "GATTANET_DEBUG"
DEBUG = {"on": False}


def fail(message: str, code: int) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def guarded(fn: Callable[[], None]) -> None:
    """Run fn, turning the errors a user can cause (pipeline.errors) into one line and a non-zero
    exit; with --debug (or GATTANET_DEBUG=1) they keep their traceback too. Bugs always do."""
    try:
        fn()
    except Exception as e:
        code = exit_code(e)
        if code is None or DEBUG["on"]:
            raise
        fail(f"bad params: {e}" if isinstance(e, ParamsError) else message(e), code)


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", envvar=DEBUG_ENV,
                                        help="Show the traceback of user errors too (bad params, data, checkpoints).")) -> None:
    DEBUG["on"] = debug


# ---------------------------------------------------------------- stages

def _stage_command(name: str, keyed: bool, help: str) -> None:
    if keyed:
        def command(key: str = typer.Argument(..., help="Entry of params.yaml this stage runs."),
                    params: Path = PARAMS_OPT, set_: Optional[list[str]] = SET_OPT) -> None:
            guarded(lambda: run_stage(name, key, params, set_))
    else:
        def command(params: Path = PARAMS_OPT, set_: Optional[list[str]] = SET_OPT) -> None:
            guarded(lambda: run_stage(name, None, params, set_))
    stage_app.command(name, help=help)(command)


for _stage in STAGES.values():
    _stage_command(_stage.name, _stage.keyed, _stage.help)


# ---------------------------------------------------------------- tools


@app.command()
def describe(backbone: str = typer.Option("toy", help="toy | resnet18 | resnet50"),
             dataset: str = typer.Option("cifar10", help="fashion-mnist | fashion-clutter | cifar10 | cifar100 | imagenet"),
             attn_dim: int = typer.Option(16, help="Attention dimension d ≥ 1."),
             kq_norm: bool = typer.Option(False, help="Batch-norm on keys/queries (the paper's ResNet setting)."),
             score_norm: bool = typer.Option(False, help="Layer-norm on scores (the paper's ResNet setting)."),
             as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Parameter counts and taps of a backbone + GAttANet configuration."""
    from gattanet.models.registry import ARCHS
    from gattanet.models.describe import describe_model as describe_config
    from gattanet.data.specs import DATASETS
    def go():
        for option, value, allowed in (("--backbone", backbone, ARCHS), ("--dataset", dataset, DATASETS)):
            if value not in allowed:
                raise UsageError(f"{option}: {value!r} is not allowed; allowed: {', '.join(allowed)}")
        if attn_dim < 1:
            raise UsageError(f"--attn-dim: the attention dimension d must be ≥ 1, got {attn_dim}")
        d = describe_config(backbone, dataset, attn_dim, kq_norm=kq_norm, score_norm=score_norm)
        if as_json:
            print(json.dumps(d, indent=2))
            return
        out = Console()
        out.print(f"[bold]{backbone}[/] on [bold]{dataset}[/] (input {tuple(d['input_shape'])}, "
                  f"{d['num_classes']} classes), attention d = {attn_dim}")
        out.print(f"backbone parameters:  {d['backbone_params']:,}")
        out.print(f"attention parameters: {d['attention_params']:,}")
        t = Table("tap", "kind", "shape")
        for tap in d["taps"]:
            t.add_row(tap["name"], tap["kind"], "×".join(map(str, tap["shape"])))
        out.print(t)

    guarded(go)


FIGURES_OPT = typer.Option(Path(".gattanet/bench.json"), "--figures",
                           help="Throughput figures file (read by `plan`, written by `--save`).")


@app.command()
def bench(as_json: bool = typer.Option(False, "--json", help="Print JSON."),
          device: str = typer.Option("auto", help="auto | cpu | cuda"),
          n_images: int = typer.Option(2048, min=64, help="Images per measurement."),
          plan_: bool = typer.Option(False, "--plan", help="Instead: measure every kind of pass the plan of "
                                     "--params needs, at its batch sizes (what `gattanet-cli plan` reads)."),
          params: Path = PLAN_PARAMS_OPT,
          probe_seconds: float = typer.Option(5.0, min=0.1, help="With --plan: seconds per kind of pass."),
          save: bool = typer.Option(False, "--save", help="Write the figures to --figures (this machine's, "
                                    "with the date), for `gattanet-cli plan`."),
          figures: Path = FIGURES_OPT) -> None:
    """Throughput of the engine against a bare loop, in fp32 and bf16, with the target ratios (one run, this machine);
    with --plan, of every kind of pass the stages of --params make (what `gattanet-cli plan` estimates from)."""
    from gattanet.cost.bench import run_bench
    from pipeline.runtime import resolve_device

    if plan_:
        return guarded(lambda: _bench_plan(params, device, probe_seconds, save, figures, as_json))
    result = {}
    guarded(lambda: result.update(run_bench(device=str(resolve_device(device)), n_images=n_images)))
    if save:
        guarded(lambda: _save_engine_bench(result, figures))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    out = Console()
    rates = result["img_per_s"]
    precisions = list(rates)
    speedup = [f"{p} / fp32" for p in precisions[1:]]
    t = Table("measure", *(f"{p} images/s" for p in precisions), *speedup,
              title=f"gattanet bench on {result['device']}")
    for k, v in rates["fp32"].items():
        others = [rates[p].get(k) for p in precisions[1:]]
        t.add_row(k, f"{v:,.0f}", *("—" if r is None else f"{r:,.0f}" for r in others),
                  *("—" if r is None else f"{r / v:.2f}" for r in others))
    out.print(t)
    for p, why in result["not_measured"].items():
        out.print(f"{p}: {why}")
    out.print("loader: no model runs in it, so measured once. eval_*: baseline + GAttANet logits of "
              "every image; shared = one first pass for both (2 backbone passes), naive = each "
              "model's own forward (3).")
    out.print("eval_shared / eval_naive: " + ", ".join(
        f"{v:.2f} ({p})" for p, v in result["eval_shared_vs_naive"].items()))
    def judged(value: float, target: float | None, digits: int) -> str:
        """The value, and whether it meets its target (in every precision measured)."""
        if target is None:
            return f"{value:.{digits}f}"
        return f"{value:.{digits}f} " + ("yes" if value >= target else "[red]no[/]")

    t = Table("ratio", *precisions, "target", title="engine ratios (each precision judged against the target)")
    for k, target in result["targets"].items():
        t.add_row(k, *(judged(result["ratios"][p][k], target, 2) for p in precisions), f"≥ {target}")
    out.print(t)
    att = result["attention"]
    t = Table("ratio", *precisions, "MACs allow", "target",
              title="attention: GAttANet training step / backbone step (each precision judged)")

    def row(name: str, ratios: dict, allowed: str, target: float | None) -> None:
        t.add_row(name, *(judged(ratios[p], target, 3) for p in precisions), allowed,
                  "—" if target is None else f"≥ {target}")

    for d, allowed in att["allowed_by_macs"].items():
        row(d, {p: att["step_vs_backbone"][p][d] for p in precisions}, f"{allowed:.3f}",
            att["targets"].get(f"{d}_vs_backbone_step"))
    row("eval_shared d64/d16", att["eval_d64_vs_d16"], "—", att["targets"]["eval_d64_vs_d16"])
    out.print(t)
    out.print("MACs allow: the ratio the two steps' multiply-add counts allow (counted on the equations' plain path).")


def _save_engine_bench(result: dict, path: Path) -> None:
    """Keep the engine benchmark beside the plan's figures (same file, same machine)."""
    from gattanet.cost import rates as cost

    figures, _ = cost.load_figures(path)
    machine = cost.machine_info(result["device"])
    if figures is None or not cost.same_machine(figures.machine, machine):
        figures = cost.Figures(machine)
    cost.save_figures(path, figures, engine=result)
    console.print(f"saved to {path}")


def _bench_plan(params_path: Path, device: str, seconds: float, save: bool, path: Path, as_json: bool) -> None:
    """`bench --plan`: measure (again) every probe of the plan of `params_path`, print, optionally save."""
    from gattanet.cost import rates as cost
    from pipeline.plan import build_works, plan_device
    from gattanet.engine.precision import autocast_dtype, precision_name

    params = _read_params(params_path)
    dev, notes = plan_device(params, None if device == "auto" and params.device != "auto" else device)
    prec = precision_name(autocast_dtype(dev, params.amp))
    machine = cost.machine_info(dev)
    figures, _ = cost.load_figures(path)
    if figures is None or not cost.same_machine(figures.machine, machine):
        figures = cost.Figures(machine)
    for note in notes:
        console.print(f"note: {note}", highlight=False)
    out, rows = Console(), []
    for probe in cost.probes_of(build_works(params)[0]):
        console.print(f"measuring {probe.key} ...", highlight=False)
        record = cost.measure(probe, dev, params.amp, seconds=seconds)
        figures.put(dev, prec, probe, record)
        rows.append({"probe": probe.key, **record})
    if save:
        cost.save_figures(path, figures)
    if as_json:
        print(json.dumps({"device": str(dev), "precision": prec, "machine": machine, "figures": rows,
                          "saved": str(path) if save else None}, indent=2))
        return
    t = Table("pass", "images/s", "batch", "calls", title=f"throughput on {dev} ({prec}), {params_path}")
    for r in rows:
        t.add_row(r["probe"], f"{r['img_per_s']:,.0f}" if "img_per_s" in r else r["error"],
                  f"{r['batch']}" + ("" if r["batch"] == r["requested_batch"] else f" (params {r['requested_batch']})")
                  if r["batch"] else "—", str(r.get("calls", "—")))
    out.print(t)
    out.print(f"{machine['cpu']}, {machine['cpu_count']} cores, {machine['threads']} torch threads"
              + (f", {machine['gpu']}" if machine["gpu"] else "") + f"; torch {machine['torch']}."
              + (f" Saved to {path}." if save else " Not saved (--save keeps them for `gattanet-cli plan`)."),
              highlight=False)


def _read_params(path: Path):
    """A params file, validated; a profile's own file (pipeline/profiles/NAME.yaml, an overlay) is composed first,
    so `plan -p pipeline/profiles/full.yaml` sizes the full profile without switching params.yaml to it."""
    from pipeline.config import load_params, validate

    name = profiles.named_by(path)
    return validate(profiles.compose(name)) if name else load_params(path)


@app.command()
def plan(params: Path = PLAN_PARAMS_OPT,
         device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N (default: params' device)."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON (every work item, rate and estimate)."),
         detail: bool = typer.Option(False, "--detail", help="Also list every work item with its rate."),
         figures: Path = FIGURES_OPT,
         measure: bool = typer.Option(True, "--measure/--no-measure",
                                      help="Measure the rates the figures file lacks (briefly), or leave them out."),
         probe_seconds: float = typer.Option(2.0, min=0.1, help="Seconds per rate measured now."),
         save: bool = typer.Option(False, "--save", help="Write the rates measured now to --figures."),
         stale: bool = typer.Option(False, "--stale", help="Only the stage entries `dvc repro` would run now "
                                    "(what `dvc status` lists; all of them where DVC cannot say).")) -> None:
    """Each stage's work (images × passes × epochs at most) and its estimated time on this machine, with the total."""
    from pipeline.plan import make_plan, render_plan, stale_entries

    def go():
        p = _read_params(params)
        only = stale_entries() if stale else None
        result = make_plan(p, params, device, figures, measure=measure, probe_seconds=probe_seconds, save=save,
                           progress=lambda msg: console.print(msg, highlight=False), only=only)
        if as_json:
            print(json.dumps(result, indent=2))
        else:
            render_plan(result, Console(), detail=detail)

    guarded(go)


@app.command()
def profile(name: str = typer.Argument(..., help=f"{' | '.join(profiles.available())} (the files in pipeline/profiles/)"),
            params: Path = PARAMS_OPT) -> None:
    """Write params.yaml as a named profile (pipeline/profiles/default.yaml + NAME.yaml) and print what changed."""
    from pipeline.profiles import switch_profile

    guarded(lambda: switch_profile(name, params, Console()))


@app.command()
def report(open_: bool = typer.Option(False, "--open", help="Open the report in a browser."),
           path: Path = typer.Option(Path("reports/index.html"), help="Report file.")) -> None:
    """Say where the report is (build it with `dvc repro` or `gattanet-cli stage report`)."""
    if not path.exists():
        fail(f"{path} does not exist yet: run `dvc repro` (or `gattanet-cli stage report`) first", 1)
    print(path.resolve().as_uri())
    if open_:
        webbrowser.open(path.resolve().as_uri())


def main() -> None:
    app(prog_name="gattanet-cli")


if __name__ == "__main__":
    sys.exit(main())
