"""The pipeline's stages, one record each, in the order the plan lists them. The CLI's `stage` commands and their
help, a KEY's check, data parallelism, the plan's entries, the folders a stage empties, and the report's loading
and compute total derive from here; tests/test_stage_deps.py holds dvc.yaml's stages, foreach sources, commands
and outputs to it. Adding a stage: docs/ARCHITECTURE.md, "Adding a stage"."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pipeline import outputs, paths
from pipeline.outputs import Output

KEY = "{key}"  # a path pattern's KEY, as in pipeline/outputs.py


def never(params, key: str | None) -> bool:
    return False


def always(params, key: str | None) -> bool:
    return True


def scratch_backbone(params, key: str | None) -> bool:
    """A backbone trained here, not loaded."""
    return key in params.backbones and params.backbones[key].weights == "scratch"


def retrained_lesions(params, key: str | None) -> bool:
    """Lesions that retrain the attention under each pattern, not only evaluate it."""
    return key in params.lesions and params.lesions[key].mode == "retrain"


def dvclive(curves: Output) -> tuple[str, str]:
    """The two outputs dvc.yaml declares of a DVCLive folder (pipeline/curves.py): its plots folder and its
    summary, `metrics.json`."""
    return f"{curves.pattern}/plots/metrics", f"{curves.pattern}/metrics.json"


@dataclass(frozen=True)
class Stage:
    """One DVC stage. Paths are dvc.yaml's, with {key} for the KEY; `outs`, `metrics` and `plots` are its
    sections of those names."""
    name: str                      # the CLI's and dvc.yaml's
    module: str                    # pipeline/stages/MODULE.py: `run(params[, key])`; `work(params, key)` for the plan
    does: str                      # its help, before the outputs
    foreach: str | None = None     # the params section whose entries are its KEYs (`foreach: ${...}`); None: no KEY
    outs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()
    folders: tuple[str, ...] = ()  # the outs that are folders: the stage empties them before it writes
    trains: Callable[[object, str | None], bool] = never  # whether entry KEY trains (data-parallel under nproc > 1)
    timed: Output | None = None    # the output whose `seconds` is an entry's wall time (the report's compute total)

    def __post_init__(self):
        assert set(self.folders) <= set(self.outs), f"{self.name}: a folder output must be one of its outs"

    @property
    def keyed(self) -> bool:
        return self.foreach is not None

    @property
    def help(self) -> str:
        shown = [p + "/" if p in self.folders else p for p in self.outs + self.metrics + self.plots]
        where = f" (KEY in params `{self.foreach}`)" if self.keyed else ""
        return f"{self.does}: {', '.join(shown).replace(KEY, 'KEY')}{where}."

    def entries(self, params) -> list[str] | None:
        """The KEYs this stage runs on (its foreach entries in params, validated or raw), or None without a KEY."""
        if not self.keyed:
            return None
        value = params
        for part in self.foreach.split("."):
            value = value.get(part) if isinstance(value, Mapping) else getattr(value, part)
            if value is None:
                return []
        return list(value)

    def code(self):
        """Its module: `run` runs it; `work(params, key)` counts an entry's planned work for `gattanet-cli plan`."""
        return importlib.import_module(f"pipeline.stages.{self.module}")

    def run(self, params, key: str | None) -> None:
        self.code().run(params, key) if self.keyed else self.code().run(params)


def _stages(*stages: Stage) -> dict[str, Stage]:
    return {s.name: s for s in stages}


STAGES = _stages(
    Stage("validate", "validate", "Check params.yaml whole before any other stage runs",
          outs=(paths.PARAMS_OK.as_posix(),)),
    Stage("data", "data", "Materialise a dataset as uint8 tensors", foreach="data",
          outs=(paths.data_path(KEY).as_posix(),)),
    Stage("pretrain", "pretrain", "Pretrain (or load) a backbone", foreach="backbones",
          outs=(paths.backbone_path(KEY).as_posix(),),
          metrics=(outputs.PRETRAIN_METRICS.pattern, dvclive(outputs.PRETRAIN_CURVES)[1]),
          plots=(dvclive(outputs.PRETRAIN_CURVES)[0],),
          trains=scratch_backbone, timed=outputs.PRETRAIN_METRICS),
    Stage("train-attn", "train_attn", "Train GAttANet on a frozen backbone, one model per seed", foreach="attention",
          outs=(paths.attention_dir(KEY).as_posix(),), folders=(paths.attention_dir(KEY).as_posix(),),
          metrics=(outputs.TRAIN_ATTN_METRICS.pattern, dvclive(outputs.TRAIN_ATTN_CURVES)[1]),
          plots=(dvclive(outputs.TRAIN_ATTN_CURVES)[0],),
          trains=always, timed=outputs.TRAIN_ATTN_METRICS),
    Stage("noise", "noise", "Noise sweep, baseline vs GAttANet on the same draws", foreach="attention",
          outs=(outputs.NOISE_CORRECT.pattern, outputs.NOISE_SWEEP.pattern), plots=(outputs.NOISE_CURVE.pattern,),
          timed=outputs.NOISE_SWEEP),
    Stage("dims", "dims", "Attention-dimension comparison over all attention runs",
          outs=(outputs.DIMS.pattern, outputs.DIMS_CSV.pattern)),
    Stage("lesions", "lesions", "Lesion ablations (Fig. 4c)", foreach="lesions",
          outs=(outputs.LESIONS.pattern, outputs.LESIONS_CORRECT.pattern),
          trains=retrained_lesions, timed=outputs.LESIONS),
    Stage("embed", "embed", "UMAP of the global query (Fig. 2b)", foreach="attention",
          outs=(outputs.EMBED_CORRECT.pattern, outputs.EMBED_STATS.pattern, outputs.EMBED_POINTS.pattern),
          timed=outputs.EMBED_STATS),
    Stage("maps", "maps", "Agreement maps (Fig. 3) and true-class-on-top rate", foreach="attention",
          outs=(outputs.MAPS.pattern, outputs.MAPS_STATS.pattern, outputs.MAPS_HITS.pattern),
          timed=outputs.MAPS_STATS),
    Stage("baselines", "baselines", "Related-work attention adapters on the frozen backbone",
          foreach="baselines.methods",
          outs=(outputs.BASELINES.pattern, outputs.BASELINES_CORRECT.pattern),
          trains=always, timed=outputs.BASELINES),
    Stage("controls", "controls", "More training and head recalibration at GAttANet's budget, vs GAttANet",
          foreach="controls", outs=(outputs.CONTROLS.pattern, outputs.CONTROLS_CORRECT.pattern),
          trains=always, timed=outputs.CONTROLS),
    Stage("extend", "extend", "A variant of an attention run (iterations, heads, top-down query, fine-tuning) "
          "trained and compared with it", foreach="extensions",
          outs=(paths.extension_dir(KEY).as_posix(), outputs.EXTENSION_CORRECT.pattern),
          folders=(paths.extension_dir(KEY).as_posix(),),
          metrics=(outputs.EXTENSION_METRICS.pattern, dvclive(outputs.EXTENSION_CURVES)[1]),
          plots=(dvclive(outputs.EXTENSION_CURVES)[0],),
          trains=always, timed=outputs.EXTENSION_METRICS),
    Stage("summary", "summary", "Table 1 of this run as a DVC metric", metrics=(outputs.SUMMARY.pattern,)),
    Stage("report", "report", "Render the HTML report from the stage outputs",
          outs=(outputs.REPORT.pattern, paths.FIGURES.as_posix()), folders=(paths.FIGURES.as_posix(),)),
)


def stage_entries(params, name: str) -> list[str] | None:
    """The KEYs stage `name` takes (its foreach entries in params, validated or raw), or None for a stage without
    a KEY."""
    return STAGES[name].entries(params)
