"""Read the stage outputs the report shows (paths and fields: pipeline/outputs.py).

The report never reruns a model: everything it shows comes from these files, and every interval a claim reads
(noise, clean gain, lesions, embedding, maps, dims, controls) is recomputed from the git-tracked per-image arrays
(pipeline/recompute.py), so every verdict is rebuilt from the arrays alone. Where an output's arrays are missing
(a run from before they were written), its JSON's intervals stand and `Outputs.arrays_missing` says so; the
report prints that list. A missing optional output is simply absent here (the report says "not run"); a missing
required one, or a file that does not follow its schema, raises ReportInputError naming the file.
"""

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gattanet.errors import InputError
from pipeline import outputs
from pipeline.config import Params
from pipeline.curves import read_curves
from pipeline.recompute import recompute_outputs
from pipeline.stages.registry import stage_entries

from .analysis_plan import AnalysisPlan

PAPER_YAML = Path(__file__).with_name("paper.yaml")


class ReportInputError(InputError, ValueError):
    """A stage output the report needs is missing or malformed."""


@dataclass
class Outputs:
    """Every stage output the params call for that exists on disk, keyed by params key."""

    root: Path
    train_attn: dict[str, dict]                                   # required: every attention run
    clean_gain: dict[str, dict] = field(default_factory=dict)     # per run, the one clean gain (recompute_outputs)
    pretrain: dict[str, dict] = field(default_factory=dict)
    noise: dict[str, dict] = field(default_factory=dict)          # sweep.json
    lesions: dict[str, dict] = field(default_factory=dict)
    embedding: dict[str, dict] = field(default_factory=dict)      # {"stats": ..., "points": ...}
    maps: dict[str, dict] = field(default_factory=dict)           # {"maps": ..., "stats": ...}
    dims: dict | None = None
    baselines: dict[str, dict] = field(default_factory=dict)      # results/baselines/METHOD.json
    controls: dict[str, dict] = field(default_factory=dict)       # results/controls/KEY.json
    extensions: dict[str, dict] = field(default_factory=dict)     # results/extensions/KEY/metrics.json
    extension_arrays: dict[str, dict] = field(default_factory=dict)  # their correct.npz (pairs of extensions)
    baseline_arrays: dict[str, dict] = field(default_factory=dict)  # results/baselines/METHOD.npz (pairs with GAttANet)
    pretrain_history: dict[str, list[dict]] = field(default_factory=dict)  # results/pretrain/KEY/live (DVCLive)
    from_arrays: list[str] = field(default_factory=list)          # per-image arrays the intervals were recomputed from
    arrays_missing: list[str] = field(default_factory=list)       # outputs whose intervals are their JSON's, and why


# The fields the report needs of each output (pipeline/outputs.py declares every output's path and fields).
TRAIN_ATTN_KEYS = outputs.TRAIN_ATTN_METRICS.required
PRETRAIN_KEYS = outputs.PRETRAIN_METRICS.required
SWEEP_KEYS = outputs.NOISE_SWEEP.required
LESION_KEYS = outputs.LESIONS.required
EMBED_KEYS = outputs.EMBED_STATS.required
MAPS_KEYS = outputs.MAPS.required
MAPS_STATS_KEYS = outputs.MAPS_STATS.required
BASELINE_KEYS = outputs.BASELINES.required
CONTROLS_KEYS = outputs.CONTROLS.required
CONTROL_ROW_KEYS = outputs.CONTROL_ROW_REQUIRED
EXTENSION_KEYS = outputs.EXTENSION_METRICS.required
HISTORY_KEYS = ("epoch", "train_acc", "val_acc")
DIMS_ROW_KEYS = outputs.DIMS_ROW_REQUIRED


def read_checked_json(path: Path, keys: tuple[str, ...]) -> dict:
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


def read_history(folder: Path) -> list[dict]:
    """A training's curves from its DVCLive folder (pipeline/curves.py) as rows (epoch an int), or
    ReportInputError naming the folder."""
    try:
        curves = read_curves(folder)
    except (KeyError, TypeError, ValueError) as e:
        raise ReportInputError(f"{folder}: not DVCLive curves as pipeline/curves.py writes them ({e})") from None
    rows = curves.get("", [])
    for row in rows:
        missing = [k for k in HISTORY_KEYS if k not in row]
        if missing:
            raise ReportInputError(f"{folder}: epoch {row['epoch']} misses curve(s) {', '.join(missing)}")
    return rows


def _check_controls(path: Path, res: dict) -> dict:
    for i, row in enumerate(res["controls"]):
        missing = [k for k in CONTROL_ROW_KEYS if k not in row]
        if missing:
            raise ReportInputError(f"{path}: controls[{i}] misses key(s) {', '.join(missing)}")
    return res


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


def stage_command(params: Params, section: str, stage: str, key: str) -> str:
    """How to produce a missing output: the dvc command, after adding the params entry if needed."""
    if key not in getattr(params, section):
        return f"add `{key}` under `{section}:` in params.yaml, then `dvc repro {stage}@{key}`"
    return f"dvc repro {stage}@{key}"


def load_outputs(params: Params, root: Path, plan: AnalysisPlan) -> Outputs:
    """Read every output the params call for, its intervals recomputed at the plan's shares: each stage's entries
    are the registry's (pipeline/stages/registry.py). Train-attn metrics are required for each attention run."""
    root = Path(root)
    runs = stage_entries(params, "train-attn")
    train_attn = {}
    for key in runs:
        path = outputs.TRAIN_ATTN_METRICS.path(key, root)
        if not path.exists():
            raise ReportInputError(f"{path}: file not found (required; run `dvc repro train-attn@{key}`)")
        train_attn[key] = read_checked_json(path, TRAIN_ATTN_KEYS)
    out = Outputs(root=root, train_attn=train_attn)

    for key in stage_entries(params, "pretrain"):
        path = outputs.PRETRAIN_METRICS.path(key, root)
        if path.exists():
            out.pretrain[key] = read_checked_json(path, PRETRAIN_KEYS)
        history = read_history(outputs.PRETRAIN_CURVES.path(key, root))
        if history:
            out.pretrain_history[key] = history
    for key in stage_entries(params, "noise"):
        path = outputs.NOISE_SWEEP.path(key, root)
        if path.exists():
            out.noise[key] = _check_sweep(path, read_checked_json(path, SWEEP_KEYS))
    for key in stage_entries(params, "lesions"):
        path = outputs.LESIONS.path(key, root)
        if path.exists():
            out.lesions[key] = read_checked_json(path, LESION_KEYS)
    for key in stage_entries(params, "embed"):
        stats, points = outputs.EMBED_STATS.path(key, root), outputs.EMBED_POINTS.path(key, root)
        if stats.exists() and points.exists():
            out.embedding[key] = {"stats": read_checked_json(stats, EMBED_KEYS), "points": read_points(points)}
    for key in stage_entries(params, "maps"):
        maps, stats = outputs.MAPS.path(key, root), outputs.MAPS_STATS.path(key, root)
        if maps.exists() and stats.exists():
            out.maps[key] = {"maps": read_checked_json(maps, MAPS_KEYS), "stats": read_checked_json(stats, MAPS_STATS_KEYS)}
    for method in stage_entries(params, "baselines"):
        path = outputs.BASELINES.path(method, root)
        if path.exists():
            out.baselines[method] = _check_baseline(path, method, read_checked_json(path, BASELINE_KEYS))
    for key in stage_entries(params, "controls"):
        path = outputs.CONTROLS.path(key, root)
        if path.exists():
            out.controls[key] = _check_controls(path, read_checked_json(path, CONTROLS_KEYS))
    for key in stage_entries(params, "extend"):
        path = outputs.EXTENSION_METRICS.path(key, root)
        if path.exists():
            out.extensions[key] = read_checked_json(path, EXTENSION_KEYS)
    dims = outputs.DIMS.path(root=root)
    if dims.exists():
        out.dims = read_checked_json(dims, ("rows",))
        for i, row in enumerate(out.dims["rows"]):
            missing = [k for k in DIMS_ROW_KEYS if k not in row]
            if missing:
                raise ReportInputError(f"{dims}: rows[{i}] misses key(s) {', '.join(missing)}")
    try:
        done = recompute_outputs(out, params.noise.test_subset, plan.get("claims", "lesions", "share"),
                                 plan.get("claims", "controls", "share"))
    except ValueError as e:  # an archive that is unreadable, lacks an array, or does not match its JSON
        raise ReportInputError(str(e)) from None
    out.from_arrays, out.arrays_missing = done.arrays, done.missing
    return out


def load_paper(path: Path = PAPER_YAML) -> dict:
    """The paper's numbers and claims (paper.yaml)."""
    return yaml.safe_load(Path(path).read_text())
