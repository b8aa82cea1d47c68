"""Every stage output file named once: its path pattern, the stage that writes it, its fields (a JSON object's
keys, a CSV's columns, an archive's arrays) and what they hold. The stages write through `path()`/`record()`,
pipeline/report/load.py reads through `path()` and `required`, and the "Pipeline outputs" table of
docs/ARCHITECTURE.md is `table()` (`python -m pipeline.outputs --write` puts it there; a test compares them).

To add an output: add an `Output` to OUTPUTS (in dvc.yaml's order); to add a field to a JSON object or CSV,
add it to its `fields` (the stage's `record()` refuses a key that is not declared, or a declared one missing).
A field is written `name`, `name: what it holds` or `name (note)`: the name is what the file holds; one that
ends in " or absent" may be left out.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

EST = "EST"  # an effect with its CI: gattanet.analysis.stats.Estimate.as_dict() (see the table's preamble)


@dataclass(frozen=True)
class Output:
    """One output file (or folder) of a stage: `pattern` with {key} for the stage's params key; `fields` the
    JSON keys / CSV columns / npz arrays it holds (empty: `content` says it); `required` the fields the
    report needs (an older file may lack the others)."""
    pattern: str
    stage: str
    fields: tuple[str, ...] = ()
    content: str = ""
    kind: str = "json"  # json | csv | npz | other
    required: tuple[str, ...] = ()

    def path(self, key: str | None = None, root: str | Path | None = None) -> Path:
        p = Path(self.pattern.format(key=key) if "{key}" in self.pattern else self.pattern)
        return Path(root) / p if root is not None else p

    @property
    def names(self) -> tuple[str, ...]:
        """The fields' names (without their descriptions)."""
        return tuple(field_name(f) for f in self.fields)

    def record(self, obj: dict) -> dict:
        """`obj` unchanged when its keys are exactly the declared fields, else ValueError naming the difference."""
        extra = [k for k in obj if k not in self.names]
        missing = [field_name(f) for f in self.fields if field_name(f) not in obj and not f.endswith(" or absent")]
        if extra or missing:
            raise ValueError(f"{self.pattern}: " + "; ".join(
                ([f"undeclared key(s) {', '.join(extra)}"] if extra else []) +
                ([f"declared key(s) missing: {', '.join(missing)}"] if missing else [])) +
                " (its fields are declared in pipeline/outputs.py)")
        return obj

    def doc(self) -> str:
        """The content column of the docs table."""
        if not self.fields:
            return self.content
        if self.kind == "csv":
            text = "`" + ",".join(self.fields) + "`"
        elif self.kind == "npz":
            text = "arrays " + ", ".join(f"`{f}`" for f in self.fields) + (":" if self.content else "")
        else:
            text = "`{" + ", ".join(self.fields) + "}`"
        return text + (f" {self.content}" if self.content else "")


def field_name(field: str) -> str:
    return re.match(r"[A-Za-z_][A-Za-z0-9_]*", field).group(0)


PRETRAIN_METRICS = Output(
    "results/pretrain/{key}/metrics.json", "pretrain@KEY",
    ("run", "arch", "dataset", "weights", "params", "val_acc", "test_acc", "test_top5", "best_epoch", "epochs_run",
     "precision", "seconds", "device"),
    required=("run", "arch", "dataset", "test_acc", "seconds", "device"))
PRETRAIN_CURVES = Output(
    "results/pretrain/{key}/live", "pretrain@KEY", kind="other",
    content="DVCLive's folder of the per-epoch curves (pipeline/curves.py): `metrics.json` (the last epoch) and "
            "`plots/metrics/NAME.tsv` (`step` = epoch, NAME) for NAME in train_loss, train_acc, val_loss, val_acc, "
            "seconds")
TRAIN_ATTN_METRICS = Output(
    "results/train-attn/{key}/metrics.json", "train-attn@KEY",
    ("run", "backbone_run", "arch", "dataset", "attn_dim", "lesion", "iterations", "heads", "query", "finetune",
     "attention (false: the fine-tuning control)", "seeds", "test_images",
     "backbone_params", "attention_params", "baseline_acc", "baseline_top5", "gattanet_acc (mean over seeds)",
     "gain: EST", "per_seed: [{seed, gattanet_acc, gattanet_top5, val_acc, best_epoch, epochs_run, alpha}]",
     "precision", "seconds", "device", "taps: [{name, kind, shape}]"),
    required=("run", "backbone_run", "arch", "dataset", "attn_dim", "seeds", "backbone_params", "attention_params",
              "baseline_acc", "gattanet_acc", "gain", "per_seed", "seconds", "device"))
TRAIN_ATTN_CURVES = Output(
    "results/train-attn/{key}/live", "train-attn@KEY", kind="other",
    content="DVCLive's folder, as pretrain's, each seed S of `attention.KEY.seeds` under `seed-S/` "
            "(`plots/metrics/seed-S/NAME.tsv`; a foreach stage cannot declare a folder per seed)")
NOISE_SWEEP = Output(
    "results/noise/{key}/sweep.json", "noise@KEY",
    ("run", "arch", "dataset", "attn_dim", "clip", "seeds", "test_images", "sigmas", "peak_sigma",
     "baseline: [per σ]", "gattanet: [per σ, mean over seeds]", "gattanet_per_seed: [[per σ]]", "gain: [EST per σ]",
     "growth: EST (gain(σ*) − gain(0))", "growth_by_sigma: [EST per σ] (gain(σ) − gain(0))",
     "chance (1 / classes)", "precision", "seconds", "device"),
    required=("run", "dataset", "attn_dim", "clip", "seeds", "sigmas", "peak_sigma", "baseline", "gattanet", "gain",
              "growth", "seconds"))
NOISE_CORRECT = Output(
    "results/noise/{key}/correct.npz", "noise@KEY", ("sigmas", "seeds", "baseline", "gattanet"),
    "per-image top-1 correctness: `baseline` (σ, N) bool, `gattanet` (seed, σ, N) bool; every model saw the same "
    "noisy images", kind="npz")
NOISE_CURVE = Output(
    "results/noise/{key}/curve.csv", "noise@KEY", ("sigma", "baseline", "gattanet", "gain", "ci_low", "ci_high"),
    kind="csv")
DIMS = Output(
    "results/dims.json", "dims",
    ("rows: [{run, backbone_run, arch, dataset, attn_dim, seeds, attention_params, baseline_acc, gattanet_acc, "
     "gain: EST, peak_sigma, baseline_at_peak, gattanet_at_peak, gain_at_peak: EST}]",
     "comparisons: [{small, large, arch, dataset, d_small, d_large, at: clean|peak|sweep, sigma, "
     "difference: EST}]"),
    "(dims.csv: the rows flattened); every EST a function of the runs' `results/noise/KEY/correct.npz`, from which "
    "the report recomputes them", required=("rows",))
DIMS_ROW_REQUIRED = ("run", "arch", "dataset", "attn_dim", "seeds", "attention_params", "baseline_acc",
                     "gattanet_acc", "gain", "peak_sigma", "baseline_at_peak", "gattanet_at_peak", "gain_at_peak")
DIMS_CSV = Output("results/dims.csv", "dims", kind="other",
                  content="dims.json's rows, nested fields flattened with `_` (e.g. `gain_mean`)")
LESIONS = Output(
    "results/lesions/{key}.json", "lesions@KEY",
    ("run", "mode", "seeds", "test_images", "taps: [names]", "baseline_acc", "full_acc",
     "patterns: [{pattern, kind, layer, accuracy, per_seed, vs_baseline: EST, vs_full: EST, kept: {share, ...EST}}]", "precision",
     "seconds", "device"),
    "; kind ∈ none, full, ablate, alone",
    required=("run", "mode", "seeds", "taps", "baseline_acc", "full_acc", "patterns", "seconds"))
LESIONS_CORRECT = Output(
    "results/lesions/{key}.npz", "lesions@KEY", ("seeds", "patterns", "baseline", "correct"),
    "per-image top-1 correctness of every pattern and seed, from which the report recomputes the effects",
    kind="npz")
EMBED_STATS = Output(
    "results/embedding/{key}/stats.json", "embed@KEY",
    ("run", "seeds", "test_images", "n_points", "attn_dim", "classes", "knn_k",
     "knn_query: EST (k-NN accuracy on q, every test image)", "chance",
     "controls: the random-attention and PCA controls' k-NN accuracies, each vs the query",
     "groups: {names, knn_query: EST, controls, largest_share, in_2d: {names, knn_acc_2d, silhouette}} or absent",
     "precision", "seconds", "device"),
    required=("run", "seeds", "n_points", "attn_dim", "classes", "knn_k", "knn_query", "chance", "seconds"))
EMBED_POINTS = Output("results/embedding/{key}/points.csv", "embed@KEY", ("x", "y", "label"), kind="csv",
                      required=("x", "y", "label"))
EMBED_CORRECT = Output(
    "results/embedding/{key}/correct.npz", "embed@KEY",
    ("labels", "seeds", "query", "random", "pca", "group_keep", "group_query", "group_random", "group_pca"),
    "per-image k-NN hits of the query and its controls (the group_ arrays only where the dataset has class groups)",
    kind="npz")
MAPS = Output(
    "results/maps/{key}/maps.json", "maps@KEY",
    ("run", "seed (the first)", "classes", "taps: [{name, kind, shape}]", "alpha",
     "samples: [{index, label, pred_baseline, pred_gattanet, image: [[...]] (H×W or C×H×W uint8), "
     "scores: [list per tap: conv H×W nested lists, dense N list], item_box: [row, col, side] (cluttered set)}]"),
    required=("run", "classes", "taps", "alpha", "samples"))
MAPS_STATS = Output(
    "results/maps/{key}/stats.json", "maps@KEY",
    ("run", "seeds", "n", "top1_rate: EST", "top3_rate: EST", "chance_top1", "chance_top3",
     "where: {taps, item_vs_clutter: {n, auc: [EST per conv tap]}, item_vs_background: {...}} (cluttered set) or absent",
     "precision", "seconds", "device"),
    required=("run", "seeds", "n", "top1_rate", "top3_rate", "chance_top1", "chance_top3", "seconds"))
MAPS_HITS = Output(
    "results/maps/{key}/hits.npz", "maps@KEY", ("seeds", "top1", "top3"),
    "per-image true-class hits of every seed's model, (seed, N) bool: the true class the unit of the logits layer "
    "that attention enhances most (`top1`), or among the 3 it enhances most (`top3`), by α·a; the report "
    "recomputes stats.json's rates from them", kind="npz")
BASELINES = Output(
    "results/baselines/{key}.json", "baselines@KEY",
    ("method", "run", "arch", "dataset", "width", "seeds", "test_images", "trainable_params", "gattanet_params",
     "matchable", "within_budget", "clean_acc", "baseline_acc", "clean_gain: EST", "peak_sigma", "acc_at_peak",
     "baseline_at_peak", "gain_at_peak: EST", "sigmas", "acc", "baseline", "infer_img_per_s",
     "backbone_infer_img_per_s", "rel_infer", "train_img_per_s", "backbone_train_img_per_s", "rel_train",
     "epochs_run: [per seed]", "precision", "seconds", "device"),
    "(KEY a method of `baselines.methods`)",
    required=("method", "run", "arch", "dataset", "seeds", "trainable_params", "gattanet_params", "matchable",
              "within_budget", "clean_acc", "baseline_acc", "clean_gain", "peak_sigma", "acc_at_peak",
              "baseline_at_peak", "gain_at_peak", "sigmas", "acc", "baseline", "rel_infer", "rel_train",
              "epochs_run", "seconds", "device"))
BASELINES_CORRECT = Output(
    "results/baselines/{key}.npz", "baselines@KEY", ("sigmas", "seeds", "baseline", "correct"),
    "per-image top-1 correctness on the noise sweep's σ: `baseline` (σ, N) bool (the frozen backbone), `correct` "
    "(seed, σ, N) bool (the method), from which the report pairs each method with GAttANet seed by seed",
    kind="npz")
CONTROLS = Output(
    "results/controls/{key}.json", "controls@KEY",
    ("run", "backbone_run", "arch", "dataset", "attn_dim", "seeds", "test_images", "gattanet_params", "epochs",
     "patience", "train_subset", "baseline_acc", "gattanet_acc", "gattanet_gain: EST",
     "controls: [{method, kind: training|head, trainable_params, rank, accuracy, per_seed, gain: EST (control − "
     "baseline), vs_gattanet: EST (GAttANet − control, paired per seed), kept: {share, ...EST} (the non-inferiority contrast), epochs_run, best_epoch, val_acc}]",
     "precision", "seconds", "device"),
    required=("run", "arch", "dataset", "attn_dim", "seeds", "test_images", "gattanet_params", "baseline_acc",
              "gattanet_acc", "gattanet_gain", "controls", "seconds", "device"))
CONTROL_ROW_REQUIRED = ("method", "kind", "trainable_params", "accuracy", "gain", "vs_gattanet", "epochs_run")
CONTROLS_CORRECT = Output(
    "results/controls/{key}.npz", "controls@KEY", ("seeds", "methods", "baseline", "gattanet", "correct"),
    "per-image top-1 correctness on the same test images: `baseline` (N,) bool, `gattanet` (seed, N) bool, "
    "`correct` (method, seed, N) bool, from which the report recomputes the effects", kind="npz")
EXTENSION_METRICS = Output(
    "results/extensions/{key}/metrics.json", "extend@KEY",
    ("key", "run (the attention run it varies)", "changes: {setting: value}", "arch", "dataset", "attn_dim",
     "iterations", "heads", "query", "finetune", "finetune_lr", "attention (false: the fine-tuning control)",
     "seeds", "test_images", "sigmas: [0, σ*]", "trainable_params", "reference_params",
     "macs_per_image", "reference_macs_per_image", "infer_img_per_s", "reference_infer_img_per_s",
     "baseline_acc: [per σ]", "reference_acc: [per σ, mean over seeds]", "variant_acc: [per σ, mean over seeds]",
     "variant_per_seed: [[per σ]]", "gain: [EST per σ] (variant − backbone)",
     "vs_gattanet: [EST per σ] (variant − the run's GAttANet, paired per seed)",
     "per_seed: [{seed, val_acc, best_epoch, epochs_run}]", "precision", "seconds", "device"),
    required=("key", "run", "changes", "dataset", "attn_dim", "seeds", "test_images", "sigmas", "trainable_params",
              "reference_params", "macs_per_image", "reference_macs_per_image", "infer_img_per_s",
              "reference_infer_img_per_s", "baseline_acc", "reference_acc", "variant_acc", "gain", "vs_gattanet",
              "per_seed", "seconds", "device"))
EXTENSION_CORRECT = Output(
    "results/extensions/{key}/correct.npz", "extend@KEY", ("sigmas", "seeds", "baseline", "gattanet", "variant"),
    "per-image top-1 correctness on the noise sweep's test images at σ = 0 and σ*: `baseline` (σ, N) bool, "
    "`gattanet` (seed, σ, N) bool (the run's models), `variant` (seed, σ, N) bool, from which the report "
    "recomputes the effects", kind="npz")
EXTENSION_CURVES = Output(
    "results/extensions/{key}/live", "extend@KEY", kind="other",
    content="DVCLive's folder, as train-attn's (`plots/metrics/seed-S/NAME.tsv`)")
SUMMARY = Output(
    "reports/summary.json", "summary",
    ("rows: [{run, backbone, dataset, attn_dim, seeds, backbone_params, attention_params, baseline_acc, "
     "gattanet_acc, gain, gain_ci_low, gain_ci_high}]",), required=("rows",))
REPORT = Output("reports/index.html", "report", kind="other", content="the report, its figures in `reports/figures/`")

OUTPUTS = (PRETRAIN_METRICS, PRETRAIN_CURVES, TRAIN_ATTN_METRICS, TRAIN_ATTN_CURVES, NOISE_SWEEP, NOISE_CORRECT,
           NOISE_CURVE, DIMS, DIMS_CSV, LESIONS, LESIONS_CORRECT, EMBED_STATS, EMBED_POINTS, EMBED_CORRECT, MAPS,
           MAPS_STATS, MAPS_HITS, BASELINES, BASELINES_CORRECT, CONTROLS, CONTROLS_CORRECT, EXTENSION_METRICS, EXTENSION_CORRECT,
           EXTENSION_CURVES, SUMMARY, REPORT)
# Written elsewhere, listed for the docs: the data and model files (pipeline/paths.py names them).
FILES = (("data/DATASET.pt", "data@DATASET", "uint8 tensors, labels, classes, mean/std, sha256"),
         ("models/backbones/KEY.pt", "pretrain@KEY", "backbone checkpoint"),
         ("models/attention/KEY/seed-S.pt", "train-attn@KEY", "one attention checkpoint per entry S of "
          "`attention.KEY.seeds` (needs its backbone checkpoint)"),
         ("models/extensions/KEY/seed-S.pt", "extend@KEY", "one checkpoint per seed of the variant, as train-attn's "
          "(a fine-tuned one holds its backbone's weights too)"))

HEADER = "| path | written by | content |\n|---|---|---|\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table() -> str:
    """The docs' "Pipeline outputs" table (markdown), from OUTPUTS and FILES."""
    out = [(o.pattern.replace("{key}", "KEY"), o.stage, o.doc()) for o in OUTPUTS]
    rows = list(FILES[:2]) + out[:2] + list(FILES[2:]) + out[2:]  # in the pipeline's order
    return HEADER + "".join(f"| `{p}` | `{s}` | {_cell(c)} |\n" for p, s, c in rows)


DOCS = Path(__file__).resolve().parent.parent / "docs" / "ARCHITECTURE.md"


def docs_table(text: str) -> str:
    """The table in the docs' text: from its header line to the first line that is not a table row."""
    start = text.index(HEADER)
    end = start + len(HEADER)
    while end < len(text) and text.startswith("|", end):
        end = text.index("\n", end) + 1
    return text[start:end]


if __name__ == "__main__":  # python -m pipeline.outputs [--write]: print the docs table, or write it into the docs
    if "--write" in sys.argv[1:]:
        text = DOCS.read_text()
        DOCS.write_text(text.replace(docs_table(text), table(), 1))
        print(f"{DOCS}: Pipeline outputs table written")
    else:
        print(table(), end="")
