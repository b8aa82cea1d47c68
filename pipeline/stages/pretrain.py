"""pretrain@KEY: train a backbone from scratch with early stopping, or take given weights (ImageNet ResNets)."""

from gattanet.models.registry import build_backbone
from gattanet.engine import distributed
from gattanet.engine.checkpoint import save_backbone
from gattanet.engine.evaluate import accuracy
from gattanet.io import write_csv, write_json
from gattanet.engine.placement import place
from gattanet.engine.precision import autocast, autocast_dtype, precision_name
from gattanet.data.specs import get_spec
from gattanet.engine.train import TrainConfig, fit
from pipeline.config import entry
from pipeline.data_source import DataSource
from pipeline.paths import BACKBONES, RESULTS, RESUME
from pipeline.runs import HISTORY_COLUMNS, augment_of, history_rows, training_context
from pipeline.runtime import resolve_device, seeded, stopwatch


def run(params, key: str) -> None:
    cfg = entry(params.backbones, key, "backbones")
    device = resolve_device(params.device)
    spec = get_spec(cfg.dataset)
    source = DataSource(params, cfg.dataset, device)
    weights = None if cfg.weights == "scratch" else cfg.weights
    seeded(params.seed)
    backbone = build_backbone(cfg.arch, source.num_classes, spec.channels, weights=weights,
                              input_size=spec.size)
    place(backbone, device)
    out = RESULTS / "pretrain" / key
    history, best_epoch, epochs_run, val_acc, resumed = [], 0, 0, None, 0.0
    dtype = autocast_dtype(device, params.amp)
    with stopwatch() as clock:
        if weights is None:
            train = source.train_loader(cfg.batch_size, augment_of(cfg.augment), cfg.train_subset)
            val = source.loader("val")
            result = fit(backbone, list(backbone.parameters()), train, val,
                         TrainConfig(epochs=cfg.epochs, patience=cfg.patience, lr=cfg.lr, seed=params.seed,
                                     amp=params.amp),
                         resume_path=RESUME / f"pretrain-{key}.pt",
                         context=training_context(params, cfg, source), label=f"pretrain {key}")
            history, best_epoch, epochs_run = result.history, result.best_epoch, result.epochs_run
            val_acc, resumed = result.best_val_acc, result.resumed_seconds  # time before a kill, if resumed
            if not distributed.training_done():
                return  # under torchrun, rank 0 alone evaluates and writes
        backbone.eval()
        with autocast(device, dtype):
            test = accuracy(backbone, source.loader("test"), topk=source.topk)
    seconds = round(clock["seconds"] + resumed, 3)  # the whole run: this process and any killed one before
    save_backbone(BACKBONES / f"{key}.pt", backbone, cfg.dataset, source.classes,
                  {"run": key, "weights": cfg.weights})
    write_csv(out / "history.csv", history_rows(history), HISTORY_COLUMNS)
    metrics = {"run": key, "arch": cfg.arch, "dataset": cfg.dataset, "weights": cfg.weights,
               "params": sum(p.numel() for p in backbone.parameters()),
               "val_acc": val_acc, "test_acc": test["top1"], "test_top5": test.get("top5"),
               "best_epoch": best_epoch, "epochs_run": epochs_run,
               "precision": precision_name(dtype), "seconds": seconds, "device": str(device)}
    write_json(out / "metrics.json", metrics)
    print(f"pretrain {key}: test accuracy {test['top1']:.4f} ({epochs_run} epochs, {seconds:.0f} s)")
