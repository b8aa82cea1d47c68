#!/usr/bin/env python3
"""Choose the cluttered task's generator settings from the backbone's validation error alone (issue 37).

Each candidate below, in order, gets the clutter profile's own data and pretrain stages (the toy CNN to early
stopping, exactly as `dvc repro` will train it) in a scratch project under .gattanet/calibrate/; no attention model
is trained. The rule, fixed before the first candidate ran (docs/CLUTTER.md): among the candidates whose validation
error lies in [15 %, 30 %], the one closest to 22.5 % (the band's middle; a tie goes to the earlier, less cluttered
one); if none lies in the band, the one closest to it, listed as a deviation. The test error is recorded, never used.

Usage: python scripts/clutter_calibrate.py [--out docs/clutter-calibration.json] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pipeline.outputs import PRETRAIN_METRICS
from pipeline.profiles import compose

ROOT = Path(__file__).resolve().parent.parent
DATASET, BACKBONE = "fashion-clutter", "toy-clutter"
BAND, TARGET = (0.15, 0.30), 0.225

CANDIDATES = {  # from least to most cluttered; canvas 32 keeps the toy CNN's 619,786 parameters
    "A": {"canvas": 32, "item_size": 20, "fragments": 4, "fragment_size": 8, "seed": 0},
    "B": {"canvas": 32, "item_size": 20, "fragments": 8, "fragment_size": 8, "seed": 0},
    "C": {"canvas": 32, "item_size": 16, "fragments": 8, "fragment_size": 8, "seed": 0},
}


def choose(errors: dict[str, float]) -> tuple[str, bool]:
    """(the chosen candidate, whether it lies in the band) under the rule above; `errors` in candidate order."""
    inside = [k for k, e in errors.items() if BAND[0] <= e <= BAND[1]]
    if inside:
        return min(inside, key=lambda k: abs(errors[k] - TARGET)), True
    distance = {k: max(BAND[0] - e, e - BAND[1]) for k, e in errors.items()}
    return min(distance, key=distance.get), False


def run_candidate(name: str, settings: dict) -> dict:
    """The profile's data and pretrain stages on one candidate, in its own scratch project; their metrics."""
    work = ROOT / ".gattanet/calibrate" / name
    work.mkdir(parents=True, exist_ok=True)
    params = compose("clutter")  # default.yaml + pipeline/profiles/clutter.yaml
    params["data"][DATASET]["clutter"] = settings
    text = yaml.safe_dump(params, sort_keys=False)
    metrics_path = work / PRETRAIN_METRICS.path(BACKBONE)
    done = (metrics_path.exists() and (work / "params.yaml").exists()
            and yaml.safe_load((work / "params.yaml").read_text()) == params)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if not done:  # a candidate already trained under the same params is read, not retrained
        (work / "params.yaml").write_text(text)
        metrics_path.unlink(missing_ok=True)
        for stage in (["validate"], ["data", DATASET], ["pretrain", BACKBONE]):
            subprocess.run([sys.executable, "-m", "pipeline.cli", "stage", *stage], cwd=work, env=env, check=True)
    metrics = json.loads(metrics_path.read_text())
    return {"settings": settings, "val_error": round(1 - metrics["val_acc"], 4),
            "test_error": round(1 - metrics["test_acc"], 4), "best_epoch": metrics["best_epoch"],
            "epochs_run": metrics["epochs_run"], "precision": metrics["precision"],
            "pretrain_seconds": metrics["seconds"]}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs/clutter-calibration.json")
    parser.add_argument("--only", nargs="*", default=list(CANDIDATES), choices=list(CANDIDATES))
    args = parser.parse_args()
    from gattanet.engine.precision import cpu_class

    results = {}
    for name in args.only:
        results[name] = run_candidate(name, CANDIDATES[name])
        print(f"candidate {name}: {results[name]}", flush=True)
    chosen, in_band = choose({k: r["val_error"] for k, r in results.items()})
    record = {"rule": f"validation error in [{BAND[0]:.0%}, {BAND[1]:.0%}], closest to {TARGET:.1%}; the test "
                      "error recorded, never used", "candidates": results, "chosen": chosen, "in_band": in_band,
              "cpu": f"{cpu_name()} ({cpu_class()})", "date": time.strftime("%Y-%m-%d", time.gmtime())}
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"chosen: {chosen} {CANDIDATES[chosen]} ({'in' if in_band else 'NOT in'} the band); {args.out}")


if __name__ == "__main__":
    main()
