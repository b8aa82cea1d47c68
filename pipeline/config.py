"""Load params.yaml, apply `--set key=value` overrides, and validate the whole file in one place.

Each section is a frozen dataclass whose fields declare the keys and their checks (`param(check)`);
`read` builds one from a mapping, and `validate` adds the cross-references between sections. Every
problem raises ParamsError naming the key, the value and what is allowed, before any work is done.
"""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gattanet.models.registry import ARCHS
from gattanet.models.spec import PAPER, QUERIES
from gattanet.data.clutter import NAME as CLUTTERED, SEED_END, ClutterSettings
from gattanet.data.specs import DATASETS
from pipeline.errors import ParamsError, UsageError
from pipeline.paths import CACHE

DEVICES = "auto | cpu | cuda | cuda:N"
LESION_MODES = ("eval", "retrain")
FOLDER_DATASETS = ("imagenet",)  # read from JPEG folders; the others are materialised tensors
FOLDER_KEYS = ("workers", "eval_cache", "cache_dir")
ADDON_TRACK = ("gattanet", "se", "eca", "cbam", "bam", "gather-excite", "non-local", "aa-conv", "mhsa", "gsa",
               "ran-mask", "ltpa")  # on the frozen backbone, at GAttANet's budget (gattanet.adapters.addons)
SCRATCH_TRACK = ("toy-scratch", "wider-toy", "gattanet-scratch", "sk", "splat", "condconv", "dynconv", "ram")  # trained
# from scratch in the toy's place (gattanet.build.FROM_SCRATCH; the wider toy at toy + GAttANet's size)
ALLOWED_BASELINES = ADDON_TRACK + SCRATCH_TRACK
SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # entry keys name files, folders and DVC stages
PAPER_FIGURES = ("fig2", "fig4a", "fig4b", "fig4c")  # report.figures: the runs the paper's figures are drawn from
CONTROL_METHODS = ("more-training", "vector-scaling", "logits", "residual-head")  # see gattanet.models.heads

MAX_VALUES = 100_000  # values in a params file, YAML aliases counted where used: validation stays fast and small
Check = Callable[[Any, str], Any]  # (value, dotted key) -> the checked, converted value

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict = 3, 10, 10, 10
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 80, 80, 40


def shown(v: Any) -> str:
    """`v` as a refusal shows it: its repr, shortened with '...' (a value in a message is bounded, however
    large or deeply nested the input)."""
    try:
        return _SHORT.repr(v)
    except ValueError:  # an int past Python's digit limit for str()
        return f"an integer of about {int(v.bit_length() * 0.30103)} digits"


REQUIRED = object()


def param(check: Check, default: Any = REQUIRED):
    """A dataclass field read from params, validated and converted by `check(value, key)`; with a
    `default`, the key may be left out (the default is then checked as if written)."""
    return field(metadata={"check": check, "default": default})


def read(cls, mapping: Any, where: str, **given):
    """An instance of dataclass `cls` from `mapping`, the section at dotted key `where` ("" for the
    top level): exactly its `param` fields, each checked; `given` fills the other fields."""
    keys = [f for f in dataclasses.fields(cls) if "check" in f.metadata]
    d = _fields(mapping, where, tuple(f.name for f in keys),
                tuple(f.name for f in keys if f.metadata["default"] is REQUIRED))
    return cls(**given, **{f.name: f.metadata["check"](d.get(f.name, f.metadata["default"]), _join(where, f.name))
                           for f in keys})


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


# ---------------------------------------------------------------- checks


def integer(lo: int | None = None, end: int | None = None, why: str = "", hi: int | None = None) -> Check:
    """An integer ≥ lo and < end (`why` says where the end comes from), and ≤ hi: the bound of a value that
    costs memory or time in proportion (`why` says which)."""
    def check(v, key):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ParamsError(f"{key}: expected an integer, got {shown(v)}")
        if lo is not None and v < lo:
            raise ParamsError(f"{key}: must be ≥ {lo}, got {shown(v)}")
        if end is not None and v >= end:
            raise ParamsError(f"{key}: must be < {end}{why}, got {shown(v)}")
        if hi is not None and v > hi:
            raise ParamsError(f"{key}: must be ≤ {hi}{why}, got {shown(v)}")
        return v
    return check


def bounded(hi: int, why: str, lo: int = 1) -> Check:
    """integer(lo, hi=hi): a count whose memory or time grows with it; `why` names what it costs."""
    return integer(lo, why=f" ({why})", hi=hi)


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> Check:
    def check(v, key):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ParamsError(f"{key}: expected a number, got {shown(v)}")
        v = float(v)
        if not math.isfinite(v):
            raise ParamsError(f"{key}: expected a finite number, got {v}")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise ParamsError(f"{key}: must be {'>' if lo_open else '≥'} {lo}, got {v}")
        if hi is not None and v > hi:
            raise ParamsError(f"{key}: must be ≤ {hi}, got {v}")
        return v
    return check


def boolean(v, key) -> bool:
    if not isinstance(v, bool):
        raise ParamsError(f"{key}: expected true or false, got {shown(v)}")
    return v


def text(v, key) -> str:
    if not isinstance(v, str) or not v:
        raise ParamsError(f"{key}: expected a non-empty string, got {shown(v)}")
    return v


def one_of(*allowed) -> Check:
    def check(v, key):
        if not isinstance(v, (str, int, float, bool, type(None))) or v not in allowed:
            raise ParamsError(f"{key}: {shown(v)} is not allowed; allowed: {', '.join(map(str, allowed))}")
        return v
    return check


def list_of(item: Check, example: str, nonempty: bool = True, most: int = 1000) -> Check:
    """A list of at most `most` items, each checked by `item`."""
    def check(v, key):
        if not isinstance(v, list) or (nonempty and not v):
            raise ParamsError(f"{key}: expected a {'non-empty ' if nonempty else ''}list, e.g. {example}; got {shown(v)}")
        if len(v) > most:
            raise ParamsError(f"{key}: at most {most} values, got {len(v)}")
        return tuple(item(x, f"{key}[{i}]") for i, x in enumerate(v))
    return check


def optional(check: Check) -> Check:
    """`check`, or None where the key is left out."""
    return lambda v, key: None if v is None else check(v, key)


def section(cls) -> Check:
    return lambda v, key: read(cls, v, key)


def named_entries(cls, name: str = "key", optional: bool = False) -> Check:
    """A mapping of named entries (runs), each read as `cls` with its name in field `name`; the names
    are safe file names, since they name the entries' output files and DVC stages."""
    def check(v, key):
        if v is None and optional:
            return {}
        return {safe_key(k, key): read(cls, e, f"{key}.{k}", **{name: k}) for k, e in _mapping(v, key).items()}
    return check


def safe_key(k, key: str) -> str:
    if not isinstance(k, str) or not SAFE_KEY.fullmatch(k):
        raise ParamsError(f"{key}: entry name {shown(k)} is not allowed; allowed: 1 to 64 letters, digits, '.', '_' "
                          f"or '-', starting with a letter or digit (it names files and DVC stages)")
    return k


def device(v, key) -> str:
    if v in ("auto", "cpu", "cuda") or (isinstance(v, str) and v.startswith("cuda:") and v[5:].isdigit()):
        return v
    raise ParamsError(f"{key}: {shown(v)} is not allowed; allowed: {DEVICES}")


def weights(v, key) -> str:
    v = text(v, key)
    if v not in ("scratch", "imagenet") and not Path(v).suffix:
        raise ParamsError(f"{key}: {shown(v)} is not allowed; allowed: scratch | imagenet | path to a .pt/.pth state_dict")
    return v


SEED = integer(0, SEED_END, " (the 32-bit seeds numpy's and UMAP's random states take)")
EPOCHS = bounded(100_000, "an upper bound on training epochs")
BATCH = bounded(65_536, "images per batch, held at once on the device")
ATTN_DIM = bounded(4096, "keys and queries per position grow with it; the paper uses 4 to 64")
ITERATIONS = bounded(16, "a backbone pass per iteration")


def seed_or_global(v, key) -> int | None:
    """A backbone's own seed, or None (left out): it trains from the global `seed`."""
    return None if v is None else SEED(v, key)


def seeds(v, key) -> tuple[int, ...]:
    s = list_of(SEED, "[0, 1, 2]", most=100)(v, key)  # one model trained per seed
    if len(set(s)) != len(s):
        raise ParamsError(f"{key}: seeds must be distinct, got {shown(list(s))}")
    return s


def sigma_grid(v, key) -> tuple[float, ...]:
    s = list_of(number(0, 10), "[0.0, 0.035, 0.1]", most=1000)(v, key)  # a pass over the test set per σ
    if len(s) < 2 or s[0] != 0 or any(b <= a for a, b in zip(s, s[1:])):
        raise ParamsError(f"{key}: must start at 0 (the clean gain) and increase strictly, with at least "
                          f"one σ > 0; got {shown(list(s))}")
    return s


def _mapping(v: Any, key: str) -> dict:
    if not isinstance(v, dict):
        raise ParamsError(f"{key}: expected a mapping, got {shown(v)}")
    return v


def _fields(d: Any, key: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict:
    d = _mapping(d, key or "params")
    unknown = [k for k in d if k not in allowed]
    if unknown:
        raise ParamsError(f"{_join(key, shown(unknown[0]) if not isinstance(unknown[0], str) else unknown[0][:80])}: unknown key; allowed: {', '.join(allowed)}")
    missing = [k for k in required if k not in d]
    if missing:
        raise ParamsError(f"{_join(key, missing[0])}: missing (required keys: {', '.join(required)})")
    return d


# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class AugmentCfg:
    rotation: float = param(number(0, 180))
    shift: float = param(number(0, 1))
    hflip: bool = param(boolean)


def clutter_settings(v, key) -> ClutterSettings:
    """The generator settings of a cluttered dataset (gattanet.data.clutter); each key left out takes its default."""
    fields = [f.name for f in dataclasses.fields(ClutterSettings)]
    d = _fields(v, key, tuple(fields), ())
    try:
        return ClutterSettings(**d)
    except ValueError as e:  # the library's message starts with the field's name
        raise ParamsError(f"{key}.{e}") from None


@dataclass(frozen=True)
class DataCfg:
    name: str
    root: str = param(text)
    val_fraction: float = param(number(0, 0.5, lo_open=True))
    # image folders (imagenet) only; tensor datasets live whole on the device (see _check_data)
    workers: int = param(bounded(256, "DataLoader processes", lo=0), default=4)  # DataLoader processes decoding JPEGs / reading the cache
    eval_cache: bool = param(boolean, default=True)  # decode val/test crops once to uint8 shards, reuse them
    cache_dir: str = param(text, default=str(CACHE))  # where (content-keyed subfolders; safe to delete)
    clutter: ClutterSettings | None = param(optional(clutter_settings), default=None)  # fashion-clutter only


@dataclass(frozen=True)
class BackboneRun:
    key: str
    arch: str = param(one_of(*ARCHS))
    dataset: str = param(text)  # a key of `data`
    weights: str = param(weights)  # "scratch" | "imagenet" | path to a state_dict
    epochs: int = param(EPOCHS)
    patience: int = param(EPOCHS)
    batch_size: int = param(BATCH)
    lr: float = param(number(0, lo_open=True))
    train_subset: int = param(integer(0))
    augment: AugmentCfg = param(section(AugmentCfg))
    seed: int | None = param(seed_or_global, default=None)  # its own global seed: several backbones of one recipe


@dataclass(frozen=True)
class AttentionRun:
    key: str
    backbone: str = param(text)  # a key of `backbones`
    dataset: str = param(text)   # the backbone's dataset
    attn_dim: int = param(ATTN_DIM)
    lesion: str = param(text)    # "full" or a pattern, one character per tap
    epochs: int = param(EPOCHS)
    patience: int = param(EPOCHS)
    batch_size: int = param(BATCH)
    lr: float = param(number(0, lo_open=True))
    l2: float = param(number(0))
    dropout: float = param(number(0, 0.99))
    kq_norm: bool = param(boolean)
    score_norm: bool = param(boolean)
    iterations: int = param(ITERATIONS)
    train_subset: int = param(integer(0))
    augment: AugmentCfg = param(section(AugmentCfg))
    seeds: tuple[int, ...] = param(seeds)  # one model per training seed, all on the same backbone
    # beyond the paper (equations in gattanet.models.gattanet/.attention): an attention run keeps the paper's values
    # (checked in validate); an extension (ExtensionRun) changes them in the run it trains
    heads: int = param(ATTN_DIM, default=PAPER["heads"])  # H global queries of attn_dim / H features each
    query: str = param(one_of(*QUERIES), default=PAPER["query"])  # top-down: from pass 1's class evidence
    finetune: bool = param(boolean, default=PAPER["finetune"])  # the backbone trains too, at finetune_lr
    finetune_lr: float | None = param(optional(number(0, lo_open=True)), default=None)  # needs finetune: true
    attention: bool = param(boolean, default=True)  # false: the fine-tuning control (needs finetune: true):
    # the backbone alone at finetune_lr, its entry otherwise a copy of the fine-tuning run's (attn_dim, lr, l2,
    # dropout, kq_norm, score_norm are then not used; heads, query, iterations, lesion must be the paper's)


@dataclass(frozen=True)
class NoiseCfg:
    sigmas: tuple[float, ...] = param(sigma_grid)  # strictly increasing, from 0
    peak_sigma: float = param(number(0, lo_open=True))  # σ*, fixed before the run: the claim tests gain(σ*) − gain(0)
    clip: bool = param(boolean)
    test_subset: int = param(integer(0))
    batch_size: int = param(BATCH)


@dataclass(frozen=True)
class LesionRun:
    key: str  # an attention run
    backbone: str = param(text)
    dataset: str = param(text)
    mode: str = param(one_of(*LESION_MODES))
    test_subset: int = param(integer(0))


@dataclass(frozen=True)
class ControlRun:
    key: str  # an attention run: its backbone, budget, seeds, training images and settings are the controls'
    backbone: str = param(text)
    dataset: str = param(text)
    methods: tuple[str, ...] = param(list_of(one_of(*CONTROL_METHODS), "[more-training, logits]"))
    test_subset: int = param(integer(0))


EXTENSION_SETTINGS = (*PAPER, "finetune_lr", "attention")  # what an extension may change: the spec's variant fields + training's


@dataclass(frozen=True)
class ExtensionRun:
    """A variant of an attention run (the paper's open questions): the run's entry with the settings given here
    changed, trained on its backbone with its seeds, images and training settings, and compared with it."""
    key: str  # names the variant's models and outputs
    run: str = param(text)  # the attention run it varies (single-pass GAttANet, the paper's)
    backbone: str = param(text)  # the run's (DVC reads it to wire the data dependency)
    dataset: str = param(text)
    iterations: int | None = param(optional(ITERATIONS), default=None)  # each left out: the run's value
    heads: int | None = param(optional(ATTN_DIM), default=None)
    query: str | None = param(optional(one_of(*QUERIES)), default=None)
    finetune: bool | None = param(optional(boolean), default=None)
    finetune_lr: float | None = param(optional(number(0, lo_open=True)), default=None)
    attention: bool | None = param(optional(boolean), default=None)

    @property
    def changes(self) -> dict:
        """The settings this variant changes, as written."""
        return {k: getattr(self, k) for k in EXTENSION_SETTINGS if getattr(self, k) is not None}

    def variant_of(self, run: "AttentionRun") -> "AttentionRun":
        """The attention run this variant trains: `run`'s entry with `changes`, under this entry's key."""
        return dataclasses.replace(run, key=self.key, **self.changes)


@dataclass(frozen=True)
class EmbeddingCfg:
    max_points: int = param(bounded(10_000_000, "points embedded by UMAP at once", lo=10))
    n_neighbors: int = param(bounded(1000, "UMAP's neighbour graph", lo=2))
    knn_k: int = param(bounded(1000, "neighbours per test image"))


@dataclass(frozen=True)
class MapsCfg:
    per_class: int = param(bounded(1000, "sample images drawn into maps.json"))
    max_images: int = param(bounded(10_000, "sample images drawn into maps.json"))
    test_subset: int = param(integer(0))


@dataclass(frozen=True)
class BaselinesCfg:
    run: str = param(text)  # an attention run
    backbone: str = param(text)
    dataset: str = param(text)
    methods: tuple[str, ...] = param(list_of(one_of(*ALLOWED_BASELINES), "[se, eca]", nonempty=False))
    epochs: int = param(EPOCHS)
    train_subset: int = param(integer(0))
    test_subset: int = param(integer(0))


@dataclass(frozen=True)
class ReportCfg:
    title: str = param(text, default="GAttANet reproduction")
    figures: dict = param(_mapping, default={})  # figure (PAPER_FIGURES) -> attention run, checked in `validate`


@dataclass(frozen=True)
class Params:
    profile: str = param(text)
    seed: int = param(SEED)
    device: str = param(device)
    amp: bool = param(boolean)  # mixed precision: bf16/fp16 autocast where the device has it
    eval_batch_size: int = param(BATCH)  # images per batch wherever a stage only evaluates
    nproc: int = param(integer(1))  # processes of the training stages: > 1 runs them under torchrun with DDP
    data: dict[str, DataCfg] = param(named_entries(DataCfg, name="name"))
    backbones: dict[str, BackboneRun] = param(named_entries(BackboneRun))
    attention: dict[str, AttentionRun] = param(named_entries(AttentionRun))
    noise: NoiseCfg = param(section(NoiseCfg))
    lesions: dict[str, LesionRun] = param(named_entries(LesionRun, optional=True))
    controls: dict[str, ControlRun] = param(named_entries(ControlRun, optional=True), default=None)
    extensions: dict[str, ExtensionRun] = param(named_entries(ExtensionRun, optional=True), default=None)
    embedding: EmbeddingCfg = param(section(EmbeddingCfg))
    maps: MapsCfg = param(section(MapsCfg))
    report: ReportCfg = param(section(ReportCfg))
    baselines: BaselinesCfg = param(section(BaselinesCfg))
    raw: dict = field(repr=False, default_factory=dict)


# ---------------------------------------------------------------- loading


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that repeats a key (PyYAML keeps the last one silently; DVC
    refuses the file, so the two readers of params.yaml would disagree)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {shown(key)} (line {key_node.start_mark.line + 1}); each key "
                        f"once", key_node.start_mark)
                seen.add(key) if isinstance(key, (str, int, float, bool)) else None
        return super().construct_mapping(node, deep)


class _Yaml12Floats(UniqueKeyLoader):
    """The params reader: `1e-3` read as a number, as YAML 1.2 and DVC do (1.1 makes it a string)."""


_Yaml12Floats.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def read_yaml(text: str) -> Any:
    """Parse params YAML the way DVC does for numbers (`1e-3` is 0.001) and duplicate keys (refused)."""
    return yaml.load(text, Loader=_Yaml12Floats)


def read_text_file(path: Path, error: type[Exception], what: str) -> str:
    """A text file's content as UTF-8, or `error` in one line naming the path and what is wrong with it
    (missing, a directory, unreadable, not UTF-8)."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise error(f"{path}: file not found ({what})") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a file ({what})") from None
    except OSError as e:
        raise error(f"{path}: cannot be read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None


def yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in one line: PyYAML's message with its line breaks folded."""
    return " ".join(str(e).split())[:300]


def check_size(raw: Any, where: str = "", budget: int = MAX_VALUES) -> None:
    """Refuse a params tree of more than `budget` values, YAML aliases counted where they are used (an alias
    bomb of a few lines expands to billions), before any check walks it: validation stays fast and small."""
    stack, seen = [(raw, where)], 0
    while stack:
        node, key = stack.pop()
        seen += 1
        if seen > budget:
            raise ParamsError(f"{key or 'params'}: more than {budget:,} values in params (YAML aliases counted "
                              f"where they are used); allowed: at most {budget:,}")
        if isinstance(node, dict):
            stack += [(v, _join(key, str(k)[:80])) for k, v in node.items()]
        elif isinstance(node, list):
            stack += [(v, f"{key}[{i}]") for i, v in enumerate(node[:budget])]


def read_mapping(path: Path, remedy: str) -> tuple[str, dict]:
    """The text and data of a YAML file whose top level is a mapping (params, a profile), or a ParamsError
    naming what is wrong; `remedy` is said when the file cannot be read."""
    text = read_text_file(path, ParamsError, remedy)
    try:
        data = read_yaml(text)
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return text, data


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Read, override and validate a params file."""
    raw = read_mapping(Path(path), "run from the project root, or pass --params")[1]
    for item in overrides or []:
        apply_override(raw, item)
    check_size(raw)
    return validate(raw)


def apply_override(raw: dict, item: str) -> None:
    """Set `a.b.c=value` in the nested dict; the value is parsed as YAML (so 16, 0.1, 1e-3, true work).
    The last key may be new (an optional key the file leaves out); validation names it if it is unknown."""
    if "=" not in item:
        raise ParamsError(f"override {item!r}: expected KEY=VALUE, e.g. attention.toy-fmnist-d16.epochs=2")
    dotted, value = item.split("=", 1)
    keys = dotted.strip().split(".")
    node = raw
    for i, k in enumerate(keys[:-1]):
        if not isinstance(node.get(k), dict):
            raise ParamsError(f"override {dotted}: {'.'.join(keys[:i + 1])} is not a section of params")
        node = node[k]
    try:
        node[keys[-1]] = read_yaml(value)
    except yaml.YAMLError as e:
        raise ParamsError(f"override {dotted}: not valid YAML: {yaml_problem(e)}") from None


def entry(section: dict, key: str, name: str):
    """params.<name>[key], or a UsageError listing the entries there are (KEY is a CLI argument)."""
    if key not in section:
        raise UsageError(f"{name}: no entry {key!r} in params; entries: {', '.join(section) or '(none)'}")
    return section[key]


# ---------------------------------------------------------------- cross-references


def validate(raw: dict) -> Params:
    """Check every key of a params dict; return typed, cross-checked params."""
    p = read(Params, raw, "", raw=raw)
    if p.nproc > 1 and p.device.startswith("cuda:"):
        raise ParamsError(f"device: {p.device!r} names one GPU, but nproc is {p.nproc}; with nproc > 1 use "
                          f"auto, cuda or cpu (rank r then runs on cuda:r)")
    for name in p.data:
        one_of(*DATASETS)(name, "data (dataset name)")
        _check_data(name, p.raw["data"][name])
    for k, run in p.backbones.items():
        _check_backbone(k, run, p)
    if not p.attention:
        raise ParamsError("attention: at least one attention run is required")
    for k, run in p.attention.items():
        _check_attention(k, run, p)
    if p.noise.peak_sigma not in p.noise.sigmas:
        raise ParamsError(f"noise.peak_sigma: {p.noise.peak_sigma} must be one of noise.sigmas "
                          f"({', '.join(map(str, p.noise.sigmas))})")
    for k, les in p.lesions.items():
        one_of(*p.attention)(k, "lesions (an attention run)")
        _same_as_run(les, p.attention[k], f"lesions.{k}")
    for k, ctl in p.controls.items():
        _check_controls(k, ctl, p)
    for k, ext in p.extensions.items():
        _check_extension(k, ext, p)
    for fig, run in p.report.figures.items():
        one_of(*PAPER_FIGURES)(fig, "report.figures (a figure)")
        one_of(*p.attention)(run, f"report.figures.{fig}")
    _check_baselines(p)
    return p


def _check_data(name: str, raw: dict) -> None:
    """The loader keys mean something only for an image folder, read by DataLoader workers."""
    for k in FOLDER_KEYS:
        if k in raw and name not in FOLDER_DATASETS:
            raise ParamsError(f"data.{name}.{k}: only an image-folder dataset ({', '.join(FOLDER_DATASETS)}) "
                              f"is read by DataLoader workers; {name} is held whole on the device: remove the key")
    _check_clutter(name, raw)


def _check_clutter(name: str, raw: dict) -> None:
    """`clutter` settings belong to a generated dataset, whose canvas is the side its models are built for."""
    from gattanet.data.specs import get_spec

    if "clutter" in raw and name != CLUTTERED:
        raise ParamsError(f"data.{name}.clutter: only {CLUTTERED} is generated (its root is Fashion-MNIST's); "
                          f"{name} is read as it is: remove the key")
    canvas = (raw.get("clutter") or {}).get("canvas", ClutterSettings.canvas)
    if name == CLUTTERED and canvas != get_spec(name).size:
        raise ParamsError(f"data.{name}.clutter.canvas: {canvas} is not allowed; allowed: {get_spec(name).size} (the "
                          f"input side the models are built for, gattanet/data/specs.py; another canvas changes the "
                          f"toy's dense layer and needs a dataset spec of its own)")


def _check_backbone(k: str, run: BackboneRun, p: Params) -> None:
    key = f"backbones.{k}"
    one_of(*p.data)(run.dataset, f"{key}.dataset")
    if run.weights == "imagenet" and run.arch == "toy":
        raise ParamsError(f"{key}.weights: 'imagenet' exists only for resnet18/resnet50; allowed for toy: scratch or a path")


def _check_attention(k: str, run: AttentionRun, p: Params) -> None:
    key = f"attention.{k}"
    one_of(*p.backbones)(run.backbone, f"{key}.backbone")
    backbone = p.backbones[run.backbone]
    if run.dataset != backbone.dataset:
        raise ParamsError(f"{key}.dataset: {run.dataset!r} must be its backbone's dataset "
                          f"(backbones.{run.backbone}.dataset = {backbone.dataset!r})")
    if run.lesion != "full":
        check_lesion(run.lesion, backbone.arch, run.dataset, f"{key}.lesion")
    for name, default in (PAPER | {"attention": True}).items():
        if getattr(run, name) != default:
            raise ParamsError(f"{key}.{name}: {getattr(run, name)!r}: an attention run is the paper's GAttANet, which "
                              f"every analysis stage (noise, embed, maps, lesions, controls) studies; allowed: {default!r}. "
                              f"A variant goes under `extensions:` (extend@KEY trains it and compares it with its run)")
    _check_variant(key, run)


def _check_extension(k: str, ext: ExtensionRun, p: Params) -> None:
    """An extension varies an attention run in at least one setting; the variant passes the run's checks."""
    key = f"extensions.{k}"
    one_of(*p.attention)(ext.run, f"{key}.run (an attention run)")
    run = p.attention[ext.run]
    _same_as_run(ext, run, key)
    if k in p.attention:
        raise ParamsError(f"{key}: the name is an attention run's too; allowed: a name of its own (it names the "
                          f"variant's models and outputs)")
    if ext.finetune is False and ext.finetune_lr is not None:
        raise ParamsError(f"{key}.finetune_lr: set with finetune: false; remove it or set finetune: true")
    variant = ext.variant_of(run)
    if all(getattr(variant, name) == getattr(run, name) for name in EXTENSION_SETTINGS):
        raise ParamsError(f"{key}: changes nothing of attention.{ext.run}; set at least one of "
                          f"{', '.join(EXTENSION_SETTINGS)} to a value other than the run's")
    _check_variant(key, variant)


def _check_variant(key: str, run: AttentionRun) -> None:
    """The settings beyond the paper: heads divide d; finetune_lr goes with finetune; `attention: false` is
    the fine-tuning control, so it needs finetune and refuses the settings of an attention it does not have."""
    if run.attn_dim % run.heads:
        raise ParamsError(f"{key}.heads: {run.heads} does not divide attn_dim = {run.attn_dim} (each head gets "
                          f"attn_dim / heads features); allowed: a divisor of {run.attn_dim}")
    if run.finetune and run.finetune_lr is None:
        raise ParamsError(f"{key}.finetune_lr: missing; finetune: true trains the backbone at its own learning "
                          f"rate, e.g. finetune_lr: 1.0e-4")
    if not run.finetune and run.finetune_lr is not None:
        raise ParamsError(f"{key}.finetune_lr: set without finetune: true (the backbone is frozen); "
                          f"remove it or set finetune: true")
    if not run.attention:
        if not run.finetune:
            raise ParamsError(f"{key}.attention: false is the fine-tuning control (the backbone fine-tuned "
                              f"without attention); it needs finetune: true and finetune_lr")
        unused = {k: v for k, v in PAPER.items() if k != "finetune"} | {"lesion": "full"}
        for name, default in unused.items():
            if getattr(run, name) != default:
                raise ParamsError(f"{key}.{name}: {getattr(run, name)!r} means nothing with attention: false "
                                  f"(no attention is trained); allowed: {default!r}")


def _same_as_run(cfg, run: AttentionRun, key: str) -> None:
    for f in ("backbone", "dataset"):
        if getattr(cfg, f) != getattr(run, f):
            raise ParamsError(f"{key}.{f}: {getattr(cfg, f)!r} must match attention.{run.key}.{f} = {getattr(run, f)!r}")


def _check_baselines(p: Params) -> None:
    b = p.baselines
    run = p.attention[one_of(*p.attention)(b.run, "baselines.run")]
    _same_as_run(b, run, "baselines")
    arch = p.backbones[run.backbone].arch
    scratch = [m for m in b.methods if m in SCRATCH_TRACK]
    if scratch and arch != "toy":
        raise ParamsError(f"baselines.methods: {scratch[0]} is trained from scratch in the toy CNN's place and needs a "
                          f"toy backbone; backbones.{run.backbone}.arch is {arch!r}")


def _check_controls(k: str, ctl: ControlRun, p: Params) -> None:
    one_of(*p.attention)(k, "controls (an attention run)")
    _same_as_run(ctl, p.attention[k], f"controls.{k}")
    if len(set(ctl.methods)) != len(ctl.methods):
        raise ParamsError(f"controls.{k}.methods: each control once, got {shown(list(ctl.methods))}")


def check_lesion(pattern: str, arch: str, dataset: str, key: str) -> None:
    """A lesion pattern has one character per tap of the backbone: its letter ('c' conv, 'd' dense) or '.'."""
    from gattanet.data.specs import get_spec
    from gattanet.models.lesion import parse_lesion
    from gattanet.models.registry import backbone_taps

    spec = get_spec(dataset)
    taps = backbone_taps(arch, spec.num_classes, spec.channels, spec.size)
    try:
        parse_lesion(pattern, taps)
    except ValueError as e:
        raise ParamsError(f"{key}: {e}") from None
