"""train-attn@KEY: train the global attention system (W_k, W_q, α) on a frozen pretrained backbone,
once per training seed of the run, and measure the clean gain over the backbone on the test set."""

import numpy as np
import pandas as pd

from gattanet.engine import distributed
from gattanet.models.attention import GlobalAttention
from gattanet.engine.checkpoint import load_backbone, save_gattanet
from gattanet.engine.evaluate import correct_batched, topk_accuracy
from gattanet.engine.fast_eval import shared_logits
from gattanet.io import write_json, write_text
from gattanet.models.gattanet import GAttANet
from gattanet.engine.placement import place
from gattanet.engine.precision import autocast, autocast_dtype, precision_name
from gattanet.analysis.stats import effect_ci
from gattanet.engine.train import TrainConfig, fit
from pipeline.config import entry
from pipeline.data_source import DataSource
from pipeline.paths import BACKBONES, RESULTS, RESUME, attention_path
from pipeline.runs import HISTORY_COLUMNS, augment_of, training_context, training_seed
from pipeline.runtime import resolve_device, seeded, stopwatch


def build(params, run, backbone, lesion: str | None = None) -> GAttANet:
    """GAttANet of an attention run's settings over a loaded backbone (α₀ = 0: starts as the baseline)."""
    attention = GlobalAttention(backbone.taps(), run.attn_dim, dropout=run.dropout,
                                kq_norm=run.kq_norm, score_norm=run.score_norm)
    lesion = lesion if lesion is not None else (None if run.lesion == "full" else run.lesion)
    return GAttANet(backbone, attention, lesion=lesion, iterations=run.iterations)


def load_run_backbone(run, device):
    """The frozen backbone of attention run `run`, on the device; every seed is built on this one object."""
    backbone, _ = load_backbone(BACKBONES / f"{run.backbone}.pt", device=str(device),
                                expect={"kind": "backbone", "dataset": run.dataset})
    return place(backbone, device)


def train(params, run, source, device, backbone, seed: int, lesion: str | None = None,
          resume_name: str | None = None):
    """Train one GAttANet of `run` for training seed `seed` (optionally under another lesion pattern)."""
    train_seed = training_seed(params, seed)
    seeded(train_seed)
    model = place(build(params, run, backbone, lesion), device)
    name = resume_name or f"train-attn-{run.key}"
    result = fit(model, list(model.attention_parameters()),
                 source.train_loader(run.batch_size, augment_of(run.augment), run.train_subset, train_seed),
                 source.loader("val"),
                 TrainConfig(epochs=run.epochs, patience=run.patience, lr=run.lr, l2=run.l2, seed=train_seed,
                             amp=params.amp),
                 resume_path=resume_file(name, seed), keep_resume=True,
                 context=training_context(params, run, source),
                 label=f"train-attn {run.key} seed {seed}" + (f" [{lesion}]" if lesion else ""))
    model.eval()
    return model, result


def resume_file(name: str, seed: int):
    """Where training seed `seed` of `name` keeps its progress; kept when it finishes, until the stage's
    outputs are written, so a stage killed at its third seed resumes there and not at the first."""
    return RESUME / f"{name}-seed{seed}.pt"


def run(params, key: str) -> None:
    run_cfg = entry(params.attention, key, "attention")
    device = resolve_device(params.device)
    source = DataSource(params, run_cfg.dataset, device)
    backbone = load_run_backbone(run_cfg, device)
    models, results = {}, {}
    dtype = autocast_dtype(device, params.amp)
    with stopwatch() as clock:
        for seed in run_cfg.seeds:
            models[seed], results[seed] = train(params, run_cfg, source, device, backbone, seed)
        if not distributed.training_done():
            return  # under torchrun, rank 0 alone evaluates and writes
        with autocast(device, dtype):
            hits = correct_batched(lambda x: shared_logits({str(s): m for s, m in models.items()}, x),
                                   source.loader("test"), topk=source.topk)
    base = hits["baseline"][:, 0].numpy().astype(float)
    gains = np.stack([hits[str(s)][:, 0].numpy() - base for s in run_cfg.seeds])
    gain = effect_ci([(1.0, gains)])
    backbone_path = BACKBONES / f"{run_cfg.backbone}.pt"
    for seed, model in models.items():
        save_gattanet(attention_path(key, seed), model, backbone_path,
                      {"run": key, "backbone_run": run_cfg.backbone, "dataset": run_cfg.dataset, "seed": seed})
    per_seed = [{"seed": s, "gattanet_acc": topk_accuracy(hits[str(s)], source.topk)["top1"],
                 "gattanet_top5": topk_accuracy(hits[str(s)], source.topk).get("top5"),
                 "val_acc": results[s].best_val_acc, "best_epoch": results[s].best_epoch,
                 "epochs_run": results[s].epochs_run,
                 "alpha": [float(a) for a in models[s].attention.alpha.detach().cpu()]} for s in run_cfg.seeds]
    baseline = topk_accuracy(hits["baseline"], source.topk)
    model = models[run_cfg.seeds[0]]
    out = RESULTS / "train-attn" / key
    history = pd.concat([pd.DataFrame(results[s].history).assign(seed=s) for s in run_cfg.seeds])
    write_text(out / "history.csv", history[["seed"] + HISTORY_COLUMNS].to_csv(index=False))
    seconds = round(clock["seconds"] + sum(r.resumed_seconds for r in results.values()), 3)  # + before a kill
    write_json(out / "metrics.json", {
        "run": key, "backbone_run": run_cfg.backbone, "arch": model.backbone.arch, "dataset": run_cfg.dataset,
        "attn_dim": run_cfg.attn_dim, "lesion": model.lesion, "iterations": run_cfg.iterations,
        "seeds": list(run_cfg.seeds), "test_images": len(base),
        "backbone_params": sum(p.numel() for p in model.backbone.parameters()),
        "attention_params": sum(p.numel() for p in model.attention_parameters()),
        "baseline_acc": baseline["top1"], "baseline_top5": baseline.get("top5"),
        "gattanet_acc": float(np.mean([r["gattanet_acc"] for r in per_seed])),
        "gain": gain.as_dict(), "per_seed": per_seed,
        "precision": precision_name(dtype), "seconds": seconds, "device": str(device),
        "taps": [t.as_dict() for t in model.taps],
    })
    for seed in run_cfg.seeds:
        resume_file(f"train-attn-{key}", seed).unlink(missing_ok=True)
    print(f"train-attn {key}: baseline {baseline['top1']:.4f}, gain {100 * gain.mean:+.2f} pts "
          f"[{100 * gain.low:+.2f}, {100 * gain.high:+.2f}] over {len(run_cfg.seeds)} seeds")
