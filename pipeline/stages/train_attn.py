"""train-attn@KEY: train the global attention system (W_k, W_q, α) on a frozen pretrained backbone,
once per training seed of the run, and measure the clean gain over the backbone on the test set."""

import numpy as np

from gattanet.engine import distributed
from gattanet.engine.checkpoint import save_gattanet
from gattanet.engine.evaluate import correct_batched, topk_accuracy
from gattanet.engine.fast_eval import shared_logits
from gattanet.io import write_json
from gattanet.engine.precision import autocast, autocast_dtype, precision_name
from gattanet.analysis.stats import effect_ci
from pipeline.config import entry
from pipeline.data_source import DataSource
from pipeline import outputs
from pipeline.paths import BACKBONES, attention_path
from pipeline.curves import Curves
from pipeline.runs import load_run_backbone, resume_file, train_attention
from pipeline.runtime import resolve_device, stopwatch


def work(params, key: str) -> list:
    """Each seed trained in turn (`train_subset` images per epoch, a validation pass after each, at most
    `epochs`), then the test set once through the shared first pass of every seed's model."""
    from pipeline.work import Work, dataset_sizes, least, model_spec, num, seeds_text, subset
    from gattanet.cost.rates import Probe

    run = entry(params.attention, key, "attention")
    s, arch, ev = dataset_sizes(params, run.dataset), params.backbones[run.backbone].arch, params.eval_batch_size
    spec, seeds, n = model_spec(run.dataset, arch, "gattanet", run), len(run.seeds), subset(s.train, run.train_subset)
    early = least(run.epochs, run.patience)
    return [Work("train-attn", key, f"{seeds_text(seeds)} × {num(n)} × ≤{run.epochs} ep", seeds * n * run.epochs,
                 Probe("train", spec, run.batch_size, l2=run.l2), least=early, sharded=True),
            Work("train-attn", key, f"val {seeds} × {num(s.val)} × ≤{run.epochs}", seeds * s.val * run.epochs,
                 Probe("eval", spec, ev), least=early),
            Work("train-attn", key, f"test {num(s.test)} × (1+{seeds})", s.test, Probe("shared", spec, ev, n=seeds))]


def run(params, key: str) -> None:
    run_cfg = entry(params.attention, key, "attention")
    device = resolve_device(params.device)
    source = DataSource(params, run_cfg.dataset, device)
    backbone = load_run_backbone(run_cfg, device)
    models, results = {}, {}
    curves = Curves(outputs.TRAIN_ATTN_CURVES.path(key))  # DVCLive: each seed's curves under seed-S/
    dtype = autocast_dtype(device, params.amp)
    with stopwatch() as clock:
        for seed in run_cfg.seeds:
            models[seed], results[seed] = train_attention(params, run_cfg, source, device, backbone, seed,
                                                          on_epoch=curves.callback(f"seed-{seed}/"))
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
    curves.finish({f"seed-{s}/": results[s].history for s in run_cfg.seeds})
    seconds = round(clock["seconds"] + sum(r.resumed_seconds for r in results.values()), 3)  # + before a kill
    write_json(outputs.TRAIN_ATTN_METRICS.path(key), outputs.TRAIN_ATTN_METRICS.record({
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
    }))
    for seed in run_cfg.seeds:
        resume_file(f"train-attn-{key}", seed).unlink(missing_ok=True)
    print(f"train-attn {key}: baseline {baseline['top1']:.4f}, gain {100 * gain.mean:+.2f} pts "
          f"[{100 * gain.low:+.2f}, {100 * gain.high:+.2f}] over {len(run_cfg.seeds)} seeds")
