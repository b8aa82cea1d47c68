"""validate: check the whole params file (and what it names on this machine) before any other stage runs.

Every stage depends on STAMP, so DVC runs this one first and stops at its error before it removes any
other stage's outputs. STAMP's bytes never change, so a passing check reruns nothing downstream.
"""

import os
from pathlib import Path

import torch

from gattanet.io import write_text
from pipeline.errors import ParamsError
from pipeline.paths import PARAMS_OK, data_path
from pipeline.runtime import resolve_device

STAMP = PARAMS_OK
TEXT = ("params.yaml passed `gattanet-cli stage validate`.\n"
        "Every stage depends on this file so that the check runs first; its content never changes,\n"
        "so a passing check reruns nothing.\n")


def work(params, key=None) -> list:
    """No model passes: the params are checked."""
    from pipeline.work import no_model

    return no_model("validate", None, "params check (no model)")


def cpu_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_machine(params) -> None:
    """What params ask of this machine that could hurt it: the device exists, and `nproc` processes fit
    its GPUs or CPU cores (64 gloo processes on 2 cores exhaust memory). Every stage checks this first."""
    device = resolve_device(params.device)  # `device: cuda` on a machine without CUDA fails here, not mid-pipeline
    if device.type == "cuda" and params.nproc > torch.cuda.device_count():
        raise ParamsError(f"nproc: {params.nproc} processes need {params.nproc} GPUs, but this machine has "
                          f"{torch.cuda.device_count()}; allowed: 1 to {torch.cuda.device_count()}")
    if device.type == "cpu" and params.nproc > cpu_cores():
        raise ParamsError(f"nproc: {params.nproc} processes on the CPU need {params.nproc} cores, but this machine "
                          f"has {cpu_cores()}; allowed: 1 to {cpu_cores()}")


def check_generated(params) -> None:
    """A generated dataset's file (fashion-clutter) was made with the settings params give: DVC tracks its
    `root` alone (every data entry's tracked keys are the same), so a changed setting would go unseen."""
    from gattanet.data.clutter import NAME, ClutterSettings

    cfg, path = params.data.get(NAME), data_path(NAME)
    if cfg is None or not path.is_file():
        return
    try:
        made = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("source")
    except Exception:  # unreadable: the data stage and its readers say so
        return
    wanted = {"clutter": (cfg.clutter or ClutterSettings()).as_dict()}
    if made != wanted:
        raise ParamsError(f"data.{NAME}.clutter: {path} was generated with {made or 'no recorded settings'} but params ask for {wanted}; "
                          f"DVC tracks data.{NAME}.root alone, so delete {path} and rerun `dvc repro`")


def run(params) -> None:
    check_machine(params)
    for name, cfg in params.data.items():
        if not Path(cfg.root).exists():
            raise ParamsError(f"data.{name}.root: {cfg.root!r} does not exist (for Fashion-MNIST run "
                              f"`make data`, or point the key at a folder holding the dataset's files)")
    check_generated(params)
    for key, cfg in params.backbones.items():
        if cfg.weights not in ("scratch", "imagenet") and not Path(cfg.weights).is_file():
            raise ParamsError(f"backbones.{key}.weights: {cfg.weights!r} is not a file; "
                              f"allowed: scratch | imagenet | path to a .pt/.pth state_dict")
    if not STAMP.exists() or STAMP.read_text() != TEXT:
        write_text(STAMP, TEXT)
    print(f"params: valid ({len(params.attention)} attention runs, {len(params.backbones)} backbones)")
