"""Training curves through DVCLive: one DVCLive folder per stage entry (pipeline.outputs names it), written
epoch by epoch through `fit`'s `on_epoch` callback and rewritten whole from fit's histories at the end.

Layout (DVCLive's): FOLDER/metrics.json (the last epoch's figures) and FOLDER/plots/metrics/NAME.tsv (columns
`step`, NAME; step = epoch, from 1), NAME one of CURVES; a stage that trains several seeds prefixes each
seed's names with `seed-S/` (plots/metrics/seed-S/NAME.tsv), since a `foreach` stage cannot declare a
folder per seed of a seeds list and a DVC plots folder may hold no metrics.json. DVCLive runs with no
dvc.yaml of its own, no experiment and no report, so inside `dvc repro` it edits nothing but this folder.
The end rewrite makes a training killed and resumed (whose first epochs an earlier process logged) give
whole curves all the same.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

CURVES = ("train_loss", "train_acc", "val_loss", "val_acc", "seconds")  # per epoch, as fit's history has them


def _live(folder: Path):
    import logging

    from dvclive import Live

    logging.getLogger("dvclive").setLevel(logging.WARNING)  # not "Logging to experiment ..." in every stage
    return Live(str(folder), save_dvc_exp=False, dvcyaml=None, report=None, monitor_system=False)


class Curves:
    """The DVCLive folder of one stage entry: `callback(prefix)` is `fit`'s `on_epoch` for one training
    (prefix "seed-S/" for seed S of several, "" for the only one); `finish(histories)` rewrites the folder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.live = None

    def callback(self, prefix: str = "") -> Callable[[dict], None]:
        def on_epoch(record: dict) -> None:
            if self.live is None:  # started at the first epoch trained: cleans what a killed run left
                self.live = _live(self.folder)
            self.live.step = int(record["epoch"])
            for name in CURVES:
                self.live.log_metric(prefix + name, float(record[name]))
            self.live.next_step()
        return on_epoch

    def finish(self, histories: Mapping[str, list[dict]]) -> None:
        """Rewrite the folder from fit's whole histories ({prefix: records}), through a temporary folder
        renamed into place."""
        if self.live is not None:
            self.live.end()
            self.live = None
        write_curves(self.folder, histories)


def write_curves(folder: str | Path, histories: Mapping[str, list[dict]]) -> Path:
    """DVCLive's folder of `histories` ({prefix: fit history records}) at `folder`, replacing it whole."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    live = _live(tmp)
    for prefix, history in histories.items():
        for record in history:
            live.step = int(record["epoch"])
            for name in CURVES:
                live.log_metric(prefix + name, float(record[name]))
            live.next_step()
    live.end()
    (tmp / "plots" / "metrics").mkdir(parents=True, exist_ok=True)  # declared in dvc.yaml even when empty
    if not (tmp / "metrics.json").exists():  # nothing trained (given weights)
        (tmp / "metrics.json").write_text("{}\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def read_curves(folder: str | Path) -> dict[str, list[dict]]:
    """{prefix: [{"epoch", *CURVES}]} from a DVCLive folder that write_curves wrote (the report's reader)."""
    root = Path(folder) / "plots" / "metrics"
    out: dict[str, dict[int, dict]] = {}
    for path in sorted(root.rglob("*.tsv")):
        name = path.relative_to(root).with_suffix("").as_posix()
        prefix, _, metric = name.rpartition("/")
        prefix = prefix + "/" if prefix else ""
        with path.open(newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                epoch = int(row["step"])
                out.setdefault(prefix, {}).setdefault(epoch, {"epoch": epoch})[metric] = float(row[metric])
    return {p: [rows[e] for e in sorted(rows)] for p, rows in out.items()}
