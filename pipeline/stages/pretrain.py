"""pretrain@KEY: train a backbone from scratch with early stopping, or take given weights (ImageNet ResNets)."""

from gattanet.models.registry import build_backbone
from gattanet.engine import distributed
from gattanet.engine.checkpoint import save_backbone
from gattanet.engine.evaluate import accuracy
from gattanet.io import write_json
from gattanet.engine.placement import place
from gattanet.engine.precision import autocast, autocast_dtype, precision_name
from gattanet.data.specs import get_spec
from gattanet.engine.train import TrainConfig, fit
from pipeline.config import entry
from pipeline.data_source import DataSource
from pipeline import outputs
from pipeline.paths import backbone_path, resume_path
from pipeline.curves import Curves
from pipeline.runs import augment_of, resume_at, training_context
from pipeline.runtime import resolve_device, seeded, stopwatch


def work(params, key: str) -> list:
    """A backbone trained from scratch: `train_subset` images per epoch and a validation pass after each, at
    most `epochs`; then the test set once (given weights: only the test)."""
    from pipeline.work import Work, dataset_sizes, least, model_spec, num, subset_size
    from gattanet.cost.rates import Probe

    cfg = entry(params.backbones, key, "backbones")
    s, spec, ev = dataset_sizes(params, cfg.dataset), model_spec(cfg.dataset, cfg.arch), params.eval_batch_size
    works = []
    if cfg.weights == "scratch":
        n, early = subset_size(s.train, cfg.train_subset), least(cfg.epochs, cfg.patience)
        works += [Work("pretrain", key, f"{num(n)} × ≤{cfg.epochs} ep", n * cfg.epochs,
                       Probe("train", spec, cfg.batch_size), least=early, sharded=True),
                  Work("pretrain", key, f"val {num(s.val)} × ≤{cfg.epochs}", s.val * cfg.epochs,
                       Probe("eval", spec, ev), least=early)]
    return works + [Work("pretrain", key, f"test {num(s.test)}", s.test, Probe("eval", spec, ev))]


def run(params, key: str) -> None:
    cfg = entry(params.backbones, key, "backbones")
    device = resolve_device(params.device)
    spec = get_spec(cfg.dataset)
    source = DataSource(params, cfg.dataset, device)
    weights = None if cfg.weights == "scratch" else cfg.weights
    seed = params.seed if cfg.seed is None else cfg.seed  # backbones.KEY.seed: one backbone of a recipe's several
    seeded(seed)
    backbone = build_backbone(cfg.arch, source.num_classes, spec.channels, weights=weights,
                              input_size=spec.size)
    place(backbone, device)
    history, best_epoch, epochs_run, val_acc, resumed = [], 0, 0, None, 0.0
    curves = Curves(outputs.PRETRAIN_CURVES.path(key))  # DVCLive: the per-epoch curves
    dtype = autocast_dtype(device, params.amp)
    with stopwatch() as clock:
        if weights is None:
            train = source.train_loader(cfg.batch_size, augment_of(cfg.augment), cfg.train_subset)
            val = source.loader("val")
            result = fit(backbone, list(backbone.parameters()), train, val,
                         TrainConfig(epochs=cfg.epochs, patience=cfg.patience, lr=cfg.lr, seed=seed,
                                     amp=params.amp),
                         resume=resume_at(resume_path("pretrain", key), training_context(cfg, source),
                                          keep=False), label=f"pretrain {key}", on_epoch=curves.callback())
            history, best_epoch, epochs_run = result.history, result.best_epoch, result.epochs_run
            val_acc, resumed = result.best_val_acc, result.resumed_seconds  # time before a kill, if resumed
            if not distributed.training_done():
                return  # under torchrun, rank 0 alone evaluates and writes
        backbone.eval()
        with autocast(device, dtype):
            test = accuracy(backbone, source.loader("test"), topk=source.topk)
    seconds = round(clock["seconds"] + resumed, 3)  # the whole run: this process and any killed one before
    save_backbone(backbone_path(key), backbone, cfg.dataset, source.classes,
                  {"run": key, "weights": cfg.weights})
    curves.finish({"": history})
    metrics = {"run": key, "arch": cfg.arch, "dataset": cfg.dataset, "weights": cfg.weights,
               "params": sum(p.numel() for p in backbone.parameters()),
               "val_acc": val_acc, "test_acc": test["top1"], "test_top5": test.get("top5"),
               "best_epoch": best_epoch, "epochs_run": epochs_run,
               "precision": precision_name(dtype), "seconds": seconds, "device": str(device)}
    write_json(outputs.PRETRAIN_METRICS.path(key), outputs.PRETRAIN_METRICS.record(metrics))
    print(f"pretrain {key}: test accuracy {test['top1']:.4f} ({epochs_run} epochs, {seconds:.0f} s)")
