"""Multiply-adds per image of the related-work methods a profile lists and of their backbone, counted on models
built as the stages build them (the count is the architecture's, so no checkpoint is read)."""

from types import SimpleNamespace

from gattanet.cost.rates import macs_per_image
from pipeline.work import model_spec


def baselines_macs(params: dict) -> dict[str, float]:
    """{method: multiply-adds per image} for every method of `baselines.methods`, and "backbone": the frozen
    backbone's (the add-on track's reference) or the plain toy's (the from-scratch track's); {} when none is listed."""
    cfg = params.get("baselines") or {}
    if not cfg.get("methods"):
        return {}
    run = params["attention"][cfg["run"]]
    arch = params["backbones"][cfg["backbone"]]["arch"]
    settings = SimpleNamespace(**run)  # AttnSpec.from_settings reads attributes
    macs = {"backbone": macs_per_image(model_spec(run["dataset"], arch))}
    for m in cfg["methods"]:
        macs[m] = macs_per_image(model_spec(run["dataset"], arch, m, settings))
    return macs
