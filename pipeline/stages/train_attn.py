"""train-attn@KEY: train the global attention system (W_k, W_q, α) on a frozen pretrained backbone."""

from gattanet.attention import GlobalAttention
from gattanet.checkpoint import load_backbone, save_gattanet
from gattanet.placement import place
from gattanet.evaluate import correct, mcnemar, topk_accuracy
from gattanet.io import write_csv, write_json
from gattanet.model import GAttANet
from gattanet.train import TrainConfig, fit
from pipeline import common
from pipeline.common import ATTENTION, BACKBONES, RESULTS, RESUME


def build(params, run, backbone, lesion: str | None = None) -> GAttANet:
    """GAttANet of an attention run's settings over a loaded backbone (α₀ = 0: starts as the baseline)."""
    attention = GlobalAttention(backbone.taps(), run.attn_dim, dropout=run.dropout,
                                kq_norm=run.kq_norm, score_norm=run.score_norm)
    lesion = lesion if lesion is not None else (None if run.lesion == "full" else run.lesion)
    return GAttANet(backbone, attention, lesion=lesion, iterations=run.iterations)


def train(params, run, source, device, lesion: str | None = None, resume_name: str | None = None):
    """Train one GAttANet for `run` (optionally under another lesion pattern); returns (model, result)."""
    backbone, _ = load_backbone(BACKBONES / f"{run.backbone}.pt", device=str(device),
                                expect={"kind": "backbone", "dataset": run.dataset})
    common.seeded(params.seed)
    model = place(build(params, run, place(backbone, device), lesion), device)
    result = fit(model, list(model.attention_parameters()),
                 source.train_loader(run.batch_size, common.augment_of(run.augment), run.train_subset),
                 source.loader("val", 512),
                 TrainConfig(epochs=run.epochs, patience=run.patience, lr=run.lr, l2=run.l2, seed=params.seed,
                             amp=params.amp),
                 resume_path=RESUME / f"{resume_name or 'train-attn-' + run.key}.pt",
                 label=f"train-attn {run.key}" + (f" [{lesion}]" if lesion else ""))
    model.eval()
    return model, result


def run(params, key: str) -> None:
    run_cfg = common.entry(params.attention, key, "attention")
    device = common.resolve_device(params.device)
    source = common.DataSource(params, run_cfg.dataset, device)
    with common.stopwatch() as clock:
        model, result = train(params, run_cfg, source, device)
        hits = correct({"baseline": model.baseline, "gattanet": model}, source.loader("test", 512),
                       topk=source.topk)
    test = {name: topk_accuracy(h, source.topk) for name, h in hits.items()}
    paired = mcnemar(hits["gattanet"][:, 0], hits["baseline"][:, 0])
    backbone_path = BACKBONES / f"{run_cfg.backbone}.pt"
    save_gattanet(ATTENTION / f"{key}.pt", model, backbone_path,
                  {"run": key, "backbone_run": run_cfg.backbone, "dataset": run_cfg.dataset})
    out = RESULTS / "train-attn" / key
    write_csv(out / "history.csv", common.history_rows(result.history), common.HISTORY_COLUMNS)
    write_json(out / "metrics.json", {
        "run": key, "backbone_run": run_cfg.backbone, "arch": model.backbone.arch, "dataset": run_cfg.dataset,
        "attn_dim": run_cfg.attn_dim, "lesion": model.lesion, "iterations": run_cfg.iterations,
        "backbone_params": sum(p.numel() for p in model.backbone.parameters()),
        "attention_params": sum(p.numel() for p in model.attention_parameters()),
        "baseline_acc": test["baseline"]["top1"], "gattanet_acc": test["gattanet"]["top1"],
        "baseline_top5": test["baseline"].get("top5"), "gattanet_top5": test["gattanet"].get("top5"),
        "paired_test": {"test": "exact McNemar, top-1", "n": paired["n"], "gattanet_only": paired["a_only"],
                        "baseline_only": paired["b_only"], "p_value": paired["p_value"]},
        "val_acc": result.best_val_acc, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        "seconds": clock["seconds"], "device": str(device),
        "alpha": [float(a) for a in model.attention.alpha.detach().cpu()],
        "taps": [t.as_dict() for t in model.taps],
    })
    print(f"train-attn {key}: baseline {test['baseline']['top1']:.4f} -> GAttANet {test['gattanet']['top1']:.4f} "
          f"(McNemar p = {paired['p_value']:.3g})")
