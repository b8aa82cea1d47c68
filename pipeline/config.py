"""Load params.yaml, apply `--set key=value` overrides, and validate the whole file in one place.

Every problem raises ParamsError naming the key, the value and what is allowed, before any
work is done; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gattanet.backbones import ARCHS
from gattanet.specs import DATASETS

DEVICES = "auto | cpu | cuda | cuda:N"
LESION_MODES = ("eval", "retrain")


class ParamsError(ValueError):
    """A params.yaml problem: the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class Augment:
    rotation: float
    shift: float
    hflip: bool


@dataclass(frozen=True)
class DataCfg:
    name: str
    root: str
    val_fraction: float


@dataclass(frozen=True)
class BackboneRun:
    key: str
    arch: str
    dataset: str
    weights: str  # "scratch" | "imagenet" | path to a state_dict
    epochs: int
    patience: int
    batch_size: int
    lr: float
    train_subset: int
    augment: Augment


@dataclass(frozen=True)
class AttentionRun:
    key: str
    backbone: str
    dataset: str
    attn_dim: int
    lesion: str  # "full" or a pattern
    epochs: int
    patience: int
    batch_size: int
    lr: float
    l2: float
    dropout: float
    kq_norm: bool
    score_norm: bool
    iterations: int
    train_subset: int
    augment: Augment
    seeds: tuple[int, ...]  # one model per training seed, all on the same backbone


@dataclass(frozen=True)
class NoiseCfg:
    sigmas: tuple[float, ...]  # strictly increasing, from 0
    peak_sigma: float          # σ*, fixed before the run: the noise claim tests gain(σ*) − gain(0)
    clip: bool
    test_subset: int
    batch_size: int


@dataclass(frozen=True)
class LesionRun:
    key: str
    backbone: str
    dataset: str
    mode: str
    test_subset: int


@dataclass(frozen=True)
class EmbeddingCfg:
    max_points: int
    n_neighbors: int
    knn_k: int


@dataclass(frozen=True)
class BaselinesCfg:
    run: str
    backbone: str
    dataset: str
    methods: tuple[str, ...]
    epochs: int
    train_subset: int
    test_subset: int


@dataclass(frozen=True)
class Params:
    profile: str
    seed: int
    device: str
    amp: bool  # mixed precision when training on CUDA
    data: dict[str, DataCfg]
    backbones: dict[str, BackboneRun]
    attention: dict[str, AttentionRun]
    noise: NoiseCfg
    lesions: dict[str, LesionRun]
    embedding: EmbeddingCfg
    maps_per_class: int
    maps_max_images: int
    maps_test_subset: int
    report: dict
    baselines: BaselinesCfg | None = None  # always set by validate()
    raw: dict = field(repr=False, default_factory=dict)


# ---------------------------------------------------------------- loading


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Read, override and validate a params file."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: file not found (run from the project root, or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    for item in overrides or []:
        apply_override(raw, item)
    return validate(raw)


def apply_override(raw: dict, item: str) -> None:
    """Set `a.b.c=value` in the nested dict; the value is parsed as YAML (so 16, 0.1, true work)."""
    if "=" not in item:
        raise ParamsError(f"override {item!r}: expected KEY=VALUE, e.g. attention.toy-fmnist-d16.epochs=2")
    dotted, value = item.split("=", 1)
    keys = dotted.strip().split(".")
    node = raw
    for i, k in enumerate(keys[:-1]):
        if not isinstance(node.get(k), dict):
            raise ParamsError(f"override {dotted}: {'.'.join(keys[:i + 1])} is not a section of params")
        node = node[k]
    if keys[-1] not in node:
        raise ParamsError(f"override {dotted}: unknown key; allowed here: {', '.join(map(str, node))}")
    node[keys[-1]] = yaml.safe_load(value)


# ---------------------------------------------------------------- checks


def _section(d: Any, key: str) -> dict:
    if not isinstance(d, dict):
        raise ParamsError(f"{key}: expected a mapping, got {d!r}")
    return d


def _fields(d: Any, key: str, allowed: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    d = _section(d, key)
    unknown = [k for k in d if k not in allowed + optional]
    if unknown:
        raise ParamsError(f"{key}.{unknown[0]}: unknown key; allowed: {', '.join(allowed + optional)}")
    missing = [k for k in allowed if k not in d]
    if missing:
        raise ParamsError(f"{key}.{missing[0]}: missing (required keys: {', '.join(allowed)})")
    return d


def _int(v: Any, key: str, lo: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ParamsError(f"{key}: expected an integer, got {v!r}")
    if lo is not None and v < lo:
        raise ParamsError(f"{key}: must be ≥ {lo}, got {v}")
    return v


def _float(v: Any, key: str, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ParamsError(f"{key}: expected a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ParamsError(f"{key}: expected a finite number, got {v}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ParamsError(f"{key}: must be {'>' if lo_open else '≥'} {lo}, got {v}")
    if hi is not None and v > hi:
        raise ParamsError(f"{key}: must be ≤ {hi}, got {v}")
    return v


def _bool(v: Any, key: str) -> bool:
    if not isinstance(v, bool):
        raise ParamsError(f"{key}: expected true or false, got {v!r}")
    return v


def _choice(v: Any, key: str, allowed) -> str:
    if v not in allowed:
        raise ParamsError(f"{key}: {v!r} is not allowed; allowed: {', '.join(map(str, allowed))}")
    return v


def _str(v: Any, key: str) -> str:
    if not isinstance(v, str) or not v:
        raise ParamsError(f"{key}: expected a non-empty string, got {v!r}")
    return v


def _augment(v: Any, key: str) -> Augment:
    d = _fields(v, key, ("rotation", "shift", "hflip"))
    return Augment(_float(d["rotation"], f"{key}.rotation", 0, 180),
                   _float(d["shift"], f"{key}.shift", 0, 1),
                   _bool(d["hflip"], f"{key}.hflip"))


def _device(v: Any) -> str:
    if v in ("auto", "cpu", "cuda") or (isinstance(v, str) and v.startswith("cuda:") and v[5:].isdigit()):
        return v
    raise ParamsError(f"device: {v!r} is not allowed; allowed: {DEVICES}")


# ---------------------------------------------------------------- sections

TOP = ("profile", "seed", "device", "amp", "data", "backbones", "attention", "noise", "lesions",
       "embedding", "maps", "report", "baselines")
BASELINE_METHODS = ("gattanet", "se", "eca", "cbam", "gather-excite", "non-local", "aa-conv", "gsa", "wider-toy")
BACKBONE_KEYS = ("arch", "dataset", "weights", "epochs", "patience", "batch_size", "lr",
                 "train_subset", "augment")
ATTENTION_KEYS = ("backbone", "dataset", "attn_dim", "lesion", "epochs", "patience", "batch_size",
                  "lr", "l2", "dropout", "kq_norm", "score_norm", "iterations", "train_subset",
                  "augment", "seeds")


def validate(raw: dict) -> Params:
    """Check every key of a params dict; return typed, cross-checked params."""
    raw = _fields(raw, "params", TOP)
    data = {name: _data(name, v) for name, v in _section(raw["data"], "data").items()}
    backbones = {k: _backbone(k, v, data) for k, v in _section(raw["backbones"], "backbones").items()}
    attention = {k: _attention(k, v, backbones) for k, v in _section(raw["attention"], "attention").items()}
    if not attention:
        raise ParamsError("attention: at least one attention run is required")
    lesions = {k: _lesion_run(k, v, attention) for k, v in _section(raw["lesions"] or {}, "lesions").items()}
    report = _section(raw["report"], "report")
    for fig, run in _section(report.get("figures", {}), "report.figures").items():
        _choice(run, f"report.figures.{fig}", list(attention))
    emb = _fields(raw["embedding"], "embedding", ("max_points", "n_neighbors", "knn_k"))
    maps = _fields(raw["maps"], "maps", ("per_class", "max_images", "test_subset"))
    return Params(
        profile=_str(raw["profile"], "profile"),
        seed=_int(raw["seed"], "seed", 0),
        device=_device(raw["device"]), amp=_bool(raw["amp"], "amp"),
        data=data, backbones=backbones, attention=attention,
        noise=_noise(raw["noise"]), lesions=lesions,
        embedding=EmbeddingCfg(_int(emb["max_points"], "embedding.max_points", 10),
                               _int(emb["n_neighbors"], "embedding.n_neighbors", 2),
                               _int(emb["knn_k"], "embedding.knn_k", 1)),
        maps_per_class=_int(maps["per_class"], "maps.per_class", 1),
        maps_max_images=_int(maps["max_images"], "maps.max_images", 1),
        maps_test_subset=_int(maps["test_subset"], "maps.test_subset", 0),
        report=report, raw=raw,
        baselines=_baselines(raw["baselines"], attention))


def _data(name: str, v: Any) -> DataCfg:
    key = f"data.{name}"
    _choice(name, "data (dataset name)", list(DATASETS))
    d = _fields(v, key, ("root", "val_fraction"))
    return DataCfg(name, _str(d["root"], f"{key}.root"),
                   _float(d["val_fraction"], f"{key}.val_fraction", 0, 0.5, lo_open=True))


def _backbone(k: str, v: Any, data: dict) -> BackboneRun:
    key = f"backbones.{k}"
    d = _fields(v, key, BACKBONE_KEYS)
    arch = _choice(d["arch"], f"{key}.arch", ARCHS)
    dataset = _choice(d["dataset"], f"{key}.dataset", list(data))
    weights = _str(d["weights"], f"{key}.weights")
    if weights == "imagenet" and arch == "toy":
        raise ParamsError(f"{key}.weights: 'imagenet' exists only for resnet18/resnet50; allowed for toy: scratch or a path")
    if weights not in ("scratch", "imagenet") and not Path(weights).suffix:
        raise ParamsError(f"{key}.weights: {weights!r} is not allowed; allowed: scratch | imagenet | path to a .pt/.pth state_dict")
    return BackboneRun(k, arch, dataset, weights,
                       _int(d["epochs"], f"{key}.epochs", 1), _int(d["patience"], f"{key}.patience", 1),
                       _int(d["batch_size"], f"{key}.batch_size", 1),
                       _float(d["lr"], f"{key}.lr", 0, lo_open=True),
                       _int(d["train_subset"], f"{key}.train_subset", 0),
                       _augment(d["augment"], f"{key}.augment"))


def _attention(k: str, v: Any, backbones: dict) -> AttentionRun:
    key = f"attention.{k}"
    d = _fields(v, key, ATTENTION_KEYS)
    bb = _choice(d["backbone"], f"{key}.backbone", list(backbones))
    dataset = _str(d["dataset"], f"{key}.dataset")
    if dataset != backbones[bb].dataset:
        raise ParamsError(f"{key}.dataset: {dataset!r} must be its backbone's dataset "
                          f"(backbones.{bb}.dataset = {backbones[bb].dataset!r})")
    lesion = _str(d["lesion"], f"{key}.lesion")
    if lesion != "full":
        check_lesion(lesion, backbones[bb].arch, dataset, f"{key}.lesion")
    return AttentionRun(
        k, bb, dataset, _int(d["attn_dim"], f"{key}.attn_dim", 1), lesion,
        _int(d["epochs"], f"{key}.epochs", 1), _int(d["patience"], f"{key}.patience", 1),
        _int(d["batch_size"], f"{key}.batch_size", 1), _float(d["lr"], f"{key}.lr", 0, lo_open=True),
        _float(d["l2"], f"{key}.l2", 0), _float(d["dropout"], f"{key}.dropout", 0, 0.99),
        _bool(d["kq_norm"], f"{key}.kq_norm"), _bool(d["score_norm"], f"{key}.score_norm"),
        _int(d["iterations"], f"{key}.iterations", 1), _int(d["train_subset"], f"{key}.train_subset", 0),
        _augment(d["augment"], f"{key}.augment"), _seeds(d["seeds"], f"{key}.seeds"))


def _seeds(v: Any, key: str) -> tuple[int, ...]:
    if not isinstance(v, list) or not v:
        raise ParamsError(f"{key}: expected a non-empty list of distinct integers ≥ 0, e.g. [0, 1, 2]; got {v!r}")
    seeds = tuple(_int(s, f"{key}[{i}]", 0) for i, s in enumerate(v))
    if len(set(seeds)) != len(seeds):
        raise ParamsError(f"{key}: seeds must be distinct, got {list(seeds)}")
    return seeds


def check_lesion(pattern: str, arch: str, dataset: str, key: str) -> None:
    """A lesion pattern has one character per tap of the backbone: its letter ('c' conv, 'd' dense) or '.'."""
    from gattanet.backbones import build_backbone
    from gattanet.lesion import parse_lesion
    from gattanet.specs import get_spec

    import torch

    spec = get_spec(dataset)
    with torch.device("meta"):  # only the tap list is needed: no memory, no init cost
        taps = build_backbone(arch, spec.num_classes, spec.channels, input_size=spec.size).taps()
    try:
        parse_lesion(pattern, taps)
    except ValueError as e:
        raise ParamsError(f"{key}: {e}") from None


def _noise(v: Any) -> NoiseCfg:
    d = _fields(v, "noise", ("sigmas", "peak_sigma", "clip", "test_subset", "batch_size"))
    if not isinstance(d["sigmas"], list) or len(d["sigmas"]) < 2:
        raise ParamsError(f"noise.sigmas: expected a list of σ ≥ 0 starting at 0, e.g. [0.0, 0.035, 0.1]; "
                          f"got {d['sigmas']!r}")
    sigmas = tuple(_float(s, f"noise.sigmas[{i}]", 0, 10) for i, s in enumerate(d["sigmas"]))
    if sigmas[0] != 0 or any(b <= a for a, b in zip(sigmas, sigmas[1:])):
        raise ParamsError(f"noise.sigmas: must start at 0 (the clean gain) and increase strictly; got {list(sigmas)}")
    peak = _float(d["peak_sigma"], "noise.peak_sigma", 0, lo_open=True)
    if peak not in sigmas:
        raise ParamsError(f"noise.peak_sigma: {peak} must be one of noise.sigmas ({', '.join(map(str, sigmas))})")
    return NoiseCfg(sigmas, peak, _bool(d["clip"], "noise.clip"),
                    _int(d["test_subset"], "noise.test_subset", 0), _int(d["batch_size"], "noise.batch_size", 1))


def _lesion_run(k: str, v: Any, attention: dict) -> LesionRun:
    key = f"lesions.{k}"
    _choice(k, "lesions (an attention run)", list(attention))
    d = _fields(v, key, ("backbone", "dataset", "mode", "test_subset"))
    run = attention[k]
    for f in ("backbone", "dataset"):
        if d[f] != getattr(run, f):
            raise ParamsError(f"{key}.{f}: {d[f]!r} must match attention.{k}.{f} = {getattr(run, f)!r}")
    return LesionRun(k, run.backbone, run.dataset, _choice(d["mode"], f"{key}.mode", LESION_MODES),
                     _int(d["test_subset"], f"{key}.test_subset", 0))


def _baselines(v: Any, attention: dict) -> BaselinesCfg:
    d = _fields(v, "baselines", ("run", "backbone", "dataset", "methods", "epochs", "train_subset",
                                 "test_subset"))
    run = attention[_choice(d["run"], "baselines.run", list(attention))]
    for f in ("backbone", "dataset"):
        if d[f] != getattr(run, f):
            raise ParamsError(f"baselines.{f}: {d[f]!r} must match attention.{run.key}.{f} = {getattr(run, f)!r}")
    if not isinstance(d["methods"], list):
        raise ParamsError(f"baselines.methods: expected a list (empty: none run) of {', '.join(BASELINE_METHODS)}")
    methods = tuple(_choice(m, f"baselines.methods[{i}]", BASELINE_METHODS) for i, m in enumerate(d["methods"]))
    return BaselinesCfg(run.key, run.backbone, run.dataset, methods, _int(d["epochs"], "baselines.epochs", 1),
                        _int(d["train_subset"], "baselines.train_subset", 0),
                        _int(d["test_subset"], "baselines.test_subset", 0))
