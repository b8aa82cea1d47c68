"""`gattanet-cli`: the Typer app. `stage <name>` runs one DVC stage; describe/bench/profile/report help by hand."""

from __future__ import annotations

import importlib
import json
import logging
import sys
import webbrowser
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
stage_app = typer.Typer(help="Run one pipeline stage (what `dvc repro` calls).", no_args_is_help=True)
app.add_typer(stage_app, name="stage")
console = Console(stderr=True)

PARAMS_OPT = typer.Option(Path("params.yaml"), "--params", "-p", help="Params file to read.")
SET_OPT = typer.Option(None, "--set", "-S", help="Override a param, e.g. -S attention.toy-fmnist-d16.epochs=2 (repeatable).")


def fail(message: str, code: int) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def guarded(fn: Callable[[], None]) -> None:
    """Run fn, turning the errors a user can cause into one line and a non-zero exit."""
    from gattanet.checkpoint import CheckpointError
    from gattanet.datasets import DatasetError
    from gattanet.train import NonFiniteLossError
    from pipeline.config import ParamsError

    try:
        fn()
    except ParamsError as e:
        fail(f"bad params: {e}", 2)
    except (DatasetError, CheckpointError, NonFiniteLossError, FileNotFoundError) as e:
        fail(str(e), 1)
    except ValueError as e:
        fail(str(e), 2)


# ---------------------------------------------------------------- stages

STAGES = {  # CLI name -> (module in pipeline.stages, takes a KEY)
    "data": ("data", True),
    "pretrain": ("pretrain", True),
    "train-attn": ("train_attn", True),
    "noise": ("noise", True),
    "dims": ("dims", False),
    "lesions": ("lesions", True),
    "embed": ("embed", True),
    "maps": ("maps", True),
    "baselines": ("baselines", True),
    "summary": ("summary", False),
    "report": ("report", False),
}


def _stage_command(name: str, module: str, keyed: bool) -> None:
    mod_help = {
        "data": "Materialise a dataset as uint8 tensors: data/KEY.pt (KEY in params `data`).",
        "pretrain": "Pretrain (or load) a backbone: models/backbones/KEY.pt (KEY in params `backbones`).",
        "train-attn": "Train GAttANet on a frozen backbone: models/attention/KEY.pt (KEY in params `attention`).",
        "noise": "Noise sweep, baseline vs GAttANet on the same draws: results/noise/KEY/ (KEY an attention run).",
        "dims": "Attention-dimension comparison over all attention runs: results/dims.json.",
        "lesions": "Lesion ablations (Fig. 4c): results/lesions/KEY.json (KEY in params `lesions`).",
        "embed": "UMAP of the global query (Fig. 2b): results/embedding/KEY/ (KEY an attention run).",
        "maps": "Agreement maps (Fig. 3) and true-class-on-top rate: results/maps/KEY/ (KEY an attention run).",
        "baselines": "Related-work attention adapters on the frozen backbone: results/baselines/KEY.json.",
        "summary": "Table 1 of this run as a DVC metric: reports/summary.json.",
        "report": "Render the HTML report from the stage outputs: reports/index.html.",
    }[name]

    def run(params: Path, overrides: Optional[list[str]], key: Optional[str] = None) -> None:
        def go():
            from pipeline.config import load_params

            logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
            p = load_params(params, overrides)
            stage = importlib.import_module(f"pipeline.stages.{module}")
            stage.run(p, key) if keyed else stage.run(p)

        guarded(go)

    if keyed:
        def command(key: str = typer.Argument(..., help="Entry of params.yaml this stage runs."),
                    params: Path = PARAMS_OPT, set_: Optional[list[str]] = SET_OPT) -> None:
            run(params, set_, key)
    else:
        def command(params: Path = PARAMS_OPT, set_: Optional[list[str]] = SET_OPT) -> None:
            run(params, set_)
    stage_app.command(name, help=mod_help)(command)


for _name, (_module, _keyed) in STAGES.items():
    _stage_command(_name, _module, _keyed)


# ---------------------------------------------------------------- tools


@app.command()
def describe(backbone: str = typer.Option("toy", help="toy | resnet18 | resnet50"),
             dataset: str = typer.Option("cifar10", help="fashion-mnist | cifar10 | cifar100 | imagenet"),
             attn_dim: int = typer.Option(16, help="Attention dimension d ≥ 1."),
             kq_norm: bool = typer.Option(False, help="Batch-norm on keys/queries (the paper's ResNet setting)."),
             score_norm: bool = typer.Option(False, help="Layer-norm on scores (the paper's ResNet setting)."),
             as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Parameter counts and taps of a backbone + GAttANet configuration."""
    from gattanet.describe import describe as describe_config

    def go():
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


@app.command()
def bench(as_json: bool = typer.Option(False, "--json", help="Print JSON."),
          device: str = typer.Option("auto", help="auto | cpu | cuda"),
          n_images: int = typer.Option(2048, min=64, help="Images per measurement.")) -> None:
    """Throughput of the engine against a bare loop, in fp32 and bf16, with the target ratios (one run, this machine)."""
    from gattanet.bench import run_bench
    from pipeline.common import resolve_device

    result = run_bench(device=str(resolve_device(device)), n_images=n_images)
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
    t = Table("ratio (fp32)", "measured", "target", "met")
    for k, v in result["ratios"].items():
        target = result["targets"][k]
        t.add_row(k, f"{v:.2f}", f"≥ {target}", "yes" if v >= target else "[red]no[/]")
    out.print(t)


@app.command()
def profile(name: str = typer.Argument(..., help="default | full | paper | tiny (the files in profiles/)"),
            params: Path = PARAMS_OPT) -> None:
    """Replace params.yaml with a named profile and print what changed."""
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
