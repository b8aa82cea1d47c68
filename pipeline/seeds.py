"""The skeleton of a stage that trains seeds (train-attn, extend, baselines, controls): each model trained in
turn, resumable, then evaluated, saved and written by the main process alone, the stage's seconds counting the
training time of a killed process it resumed, and the resume files removed only once everything is written."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gattanet.engine import distributed
from pipeline.curves import Curves
from pipeline.paths import resume_path
from pipeline.runtime import stopwatch


@dataclass(frozen=True)
class Trained:
    """What a stage trained: {job: model} and {job: TrainResult} in training order, and the stage's seconds (its
    training and evaluation, plus the training time of the killed processes it resumed)."""
    models: dict
    results: dict
    seconds: float


def train_seeds(stage: str, key: str, jobs: Iterable[Hashable],
                train: Callable[[Any, Path, Callable | None], tuple], evaluate: Callable[[dict], Any],
                write: Callable[[Trained, Any], None], *, curves: str | Path | None = None,
                save: Callable[[Any, Any], None] | None = None,
                resume_of: Callable[[Any], Path] | None = None) -> None:
    """Run stage entry `stage@key`: `train(job, resume file, on_epoch)` -> (model, TrainResult) for each job (a
    training seed, or what the stage trains per seed) in turn; then, on the main process alone under torchrun,
    `evaluate({job: model})` on the same clock; `save(job, model)` for each, into the stage's emptied folder
    output; its `curves` folder (DVCLive, jobs being seeds: `seed-S/`) rewritten whole; `write(Trained, what
    evaluate returned)`; last, the resume files (`resume_of(job)`, default resume_path(stage, key, job))
    removed: a stage killed before its outputs are all written resumes every seed it had finished."""
    from pipeline.stages import clear_folder_outputs

    resume_of = resume_of or (lambda seed: resume_path(stage, key, seed))
    live = Curves(curves) if curves is not None else None
    models, results = {}, {}
    with stopwatch() as clock:
        for job in jobs:
            models[job], results[job] = train(job, resume_of(job), live.callback(f"seed-{job}/") if live else None)
        if not distributed.training_done():
            return  # under torchrun, rank 0 alone evaluates and writes
        evaluated = evaluate(models)
    if save is not None:
        clear_folder_outputs(stage, key)  # now that the new models exist: no file of the last run stays
        for job, model in models.items():
            save(job, model)
    if live is not None:
        live.finish({f"seed-{job}/": result.history for job, result in results.items()})
    write(Trained(models, results, round(clock["seconds"] + sum(r.resumed_seconds for r in results.values()), 3)),
          evaluated)
    for job in models:
        resume_of(job).unlink(missing_ok=True)
