"""Read the stage outputs the report shows (layout: docs/ARCHITECTURE.md, "Pipeline outputs").

The report never recomputes a result: everything it shows comes from these files. A missing
optional output is simply absent here (the report says "not run"); a missing required one,
or a file that does not follow its schema, raises ReportInputError naming the file.
"""

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gattanet.errors import InputError

PAPER_YAML = Path(__file__).with_name("paper.yaml")


class ReportInputError(InputError, ValueError):
    """A stage output the report needs is missing or malformed."""


@dataclass
class Outputs:
    """Every stage output the params call for that exists on disk, keyed by params key."""

    root: Path
    train_attn: dict[str, dict]                                   # required: every attention run
    pretrain: dict[str, dict] = field(default_factory=dict)
    noise: dict[str, dict] = field(default_factory=dict)          # sweep.json
    lesions: dict[str, dict] = field(default_factory=dict)
    embedding: dict[str, dict] = field(default_factory=dict)      # {"stats": ..., "points": ...}
    maps: dict[str, dict] = field(default_factory=dict)           # {"maps": ..., "stats": ...}
    dims: dict | None = None
    baselines: dict[str, dict] = field(default_factory=dict)      # results/baselines/METHOD.json


TRAIN_ATTN_KEYS = ("run", "backbone_run", "arch", "dataset", "attn_dim", "seeds", "backbone_params",
                   "attention_params", "baseline_acc", "gattanet_acc", "gain", "per_seed", "seconds", "device")
PRETRAIN_KEYS = ("run", "arch", "dataset", "test_acc", "seconds", "device")
SWEEP_KEYS = ("run", "dataset", "attn_dim", "clip", "seeds", "sigmas", "peak_sigma", "baseline", "gattanet",
              "gain", "growth", "seconds")
LESION_KEYS = ("run", "mode", "seeds", "taps", "baseline_acc", "full_acc", "patterns", "seconds")
EMBED_KEYS = ("run", "seeds", "n_points", "attn_dim", "classes", "knn_k", "knn_query", "chance", "seconds")
MAPS_KEYS = ("run", "classes", "taps", "alpha", "samples")
MAPS_STATS_KEYS = ("run", "seeds", "n", "top1_rate", "top3_rate", "chance_top1", "chance_top3", "seconds")
BASELINE_KEYS = ("method", "run", "arch", "dataset", "seeds", "trainable_params", "gattanet_params", "matchable",
                 "within_budget", "clean_acc", "baseline_acc", "clean_gain", "peak_sigma", "acc_at_peak",
                 "baseline_at_peak", "gain_at_peak", "sigmas", "acc", "baseline", "rel_infer", "rel_train",
                 "epochs_run", "seconds", "device")
DIMS_ROW_KEYS = ("run", "arch", "dataset", "attn_dim", "seeds", "attention_params", "baseline_acc",
                 "gattanet_acc", "gain", "peak_sigma", "baseline_at_peak", "gattanet_at_peak", "gain_at_peak")


def read_json(path: Path, keys: tuple[str, ...]) -> dict:
    """A JSON object that has at least `keys`, or ReportInputError naming the file."""
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportInputError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ReportInputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ReportInputError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise ReportInputError(f"{path}: missing key(s) {', '.join(missing)}")
    return obj


def read_points(path: Path) -> dict[str, list]:
    """points.csv (x,y,label) as columns."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"x", "y", "label"} <= set(reader.fieldnames):
            raise ReportInputError(f"{path}: expected columns x,y,label, got {reader.fieldnames}")
        cols: dict[str, list] = {"x": [], "y": [], "label": []}
        for i, row in enumerate(reader, start=2):
            try:
                cols["x"].append(float(row["x"]))
                cols["y"].append(float(row["y"]))
                cols["label"].append(int(row["label"]))
            except (TypeError, ValueError):
                raise ReportInputError(f"{path}: line {i} is not numeric x,y,label: {row}") from None
    return cols


def _check_sweep(path: Path, sweep: dict) -> dict:
    n = len(sweep["sigmas"])
    for name in ("baseline", "gattanet", "gain"):
        values = sweep[name]
        if not isinstance(values, list) or len(values) != n:
            raise ReportInputError(f"{path}: {name} must be a list of {n} values (one per sigma)")
    return sweep


def _check_baseline(path: Path, method: str, res: dict) -> dict:
    """A baselines file must be the one of `method`, with one accuracy per σ for the method and the backbone."""
    if res["method"] != method:
        raise ReportInputError(f"{path}: holds method {res['method']!r}, expected {method!r}")
    n = len(res["sigmas"]) if isinstance(res["sigmas"], list) else -1
    for name in ("acc", "baseline"):
        if n < 1 or not isinstance(res[name], list) or len(res[name]) != n:
            raise ReportInputError(f"{path}: {name} must be a list of one value per sigma ({max(n, 0)} sigmas)")
    return res


def stage_command(params: dict, section: str, stage: str, key: str) -> str:
    """How to produce a missing output: the dvc command, after adding the params entry if needed."""
    if key not in (params.get(section) or {}):
        return f"add `{key}` under `{section}:` in params.yaml, then `dvc repro {stage}@{key}`"
    return f"dvc repro {stage}@{key}"


def load_outputs(params: dict, root: Path) -> Outputs:
    """Read every output the params call for. Train-attn metrics are required for each attention run."""
    root = Path(root)
    runs = params.get("attention") or {}
    if not runs:
        raise ReportInputError("params: `attention` lists no runs; the report needs at least one")
    train_attn = {}
    for key in runs:
        path = root / "results" / "train-attn" / key / "metrics.json"
        if not path.exists():
            raise ReportInputError(f"{path}: file not found (required; run `dvc repro train-attn@{key}`)")
        train_attn[key] = read_json(path, TRAIN_ATTN_KEYS)
    out = Outputs(root=root, train_attn=train_attn)

    for key in params.get("backbones") or {}:
        path = root / "results" / "pretrain" / key / "metrics.json"
        if path.exists():
            out.pretrain[key] = read_json(path, PRETRAIN_KEYS)
    for key in runs:
        path = root / "results" / "noise" / key / "sweep.json"
        if path.exists():
            out.noise[key] = _check_sweep(path, read_json(path, SWEEP_KEYS))
    for key in params.get("lesions") or {}:
        path = root / "results" / "lesions" / f"{key}.json"
        if path.exists():
            out.lesions[key] = read_json(path, LESION_KEYS)
    for key in runs:  # embed@KEY and maps@KEY run for every attention run
        stats = root / "results" / "embedding" / key / "stats.json"
        points = root / "results" / "embedding" / key / "points.csv"
        if stats.exists() and points.exists():
            out.embedding[key] = {"stats": read_json(stats, EMBED_KEYS), "points": read_points(points)}
    for key in runs:
        maps = root / "results" / "maps" / key / "maps.json"
        stats = root / "results" / "maps" / key / "stats.json"
        if maps.exists() and stats.exists():
            out.maps[key] = {"maps": read_json(maps, MAPS_KEYS), "stats": read_json(stats, MAPS_STATS_KEYS)}
    for method in (params.get("baselines") or {}).get("methods") or ():
        path = root / "results" / "baselines" / f"{method}.json"
        if path.exists():
            out.baselines[method] = _check_baseline(path, method, read_json(path, BASELINE_KEYS))
    dims = root / "results" / "dims.json"
    if dims.exists():
        out.dims = read_json(dims, ("rows",))
        for i, row in enumerate(out.dims["rows"]):
            missing = [k for k in DIMS_ROW_KEYS if k not in row]
            if missing:
                raise ReportInputError(f"{dims}: rows[{i}] misses key(s) {', '.join(missing)}")
    return out


def load_paper(path: Path = PAPER_YAML) -> dict:
    """The paper's numbers and claims (paper.yaml)."""
    return yaml.safe_load(Path(path).read_text())
