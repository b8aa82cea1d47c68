"""pretrain@KEY: train a backbone from scratch with early stopping, or take given weights (ImageNet ResNets)."""

from gattanet.backbones import build_backbone
from gattanet.checkpoint import save_backbone
from gattanet.evaluate import accuracy
from gattanet.io import write_csv, write_json
from gattanet.placement import place
from gattanet.precision import autocast, autocast_dtype, precision_name
from gattanet.specs import get_spec
from gattanet.train import TrainConfig, fit
from pipeline import common
from pipeline.common import BACKBONES, EVAL_BATCH, RESULTS, RESUME


def run(params, key: str) -> None:
    cfg = common.entry(params.backbones, key, "backbones")
    device = common.resolve_device(params.device)
    spec = get_spec(cfg.dataset)
    source = common.DataSource(params, cfg.dataset, device)
    weights = None if cfg.weights == "scratch" else cfg.weights
    common.seeded(params.seed)
    backbone = build_backbone(cfg.arch, source.num_classes, spec.channels, weights=weights,
                              input_size=spec.size)
    place(backbone, device)
    out = RESULTS / "pretrain" / key
    history, best_epoch, epochs_run, val_acc = [], 0, 0, None
    dtype = autocast_dtype(device, params.amp)
    with common.stopwatch() as clock:
        if weights is None:
            train = source.train_loader(cfg.batch_size, common.augment_of(cfg.augment), cfg.train_subset)
            val = source.loader("val", EVAL_BATCH)
            result = fit(backbone, list(backbone.parameters()), train, val,
                         TrainConfig(epochs=cfg.epochs, patience=cfg.patience, lr=cfg.lr, seed=params.seed,
                                     amp=params.amp),
                         resume_path=RESUME / f"pretrain-{key}.pt",
                         context=common.training_context(params, cfg, source), label=f"pretrain {key}")
            history, best_epoch, epochs_run = result.history, result.best_epoch, result.epochs_run
            val_acc = result.best_val_acc
        backbone.eval()
        with autocast(device, dtype):
            test = accuracy(backbone, source.loader("test", EVAL_BATCH), topk=source.topk)
    save_backbone(BACKBONES / f"{key}.pt", backbone, cfg.dataset, source.classes,
                  {"run": key, "weights": cfg.weights})
    write_csv(out / "history.csv", common.history_rows(history), common.HISTORY_COLUMNS)
    metrics = {"run": key, "arch": cfg.arch, "dataset": cfg.dataset, "weights": cfg.weights,
               "params": sum(p.numel() for p in backbone.parameters()),
               "val_acc": val_acc, "test_acc": test["top1"], "test_top5": test.get("top5"),
               "best_epoch": best_epoch, "epochs_run": epochs_run,
               "precision": precision_name(dtype), "seconds": clock["seconds"], "device": str(device)}
    write_json(out / "metrics.json", metrics)
    print(f"pretrain {key}: test accuracy {test['top1']:.4f} ({epochs_run} epochs, {clock['seconds']:.0f} s)")
