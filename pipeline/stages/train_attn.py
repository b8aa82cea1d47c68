"""train-attn@KEY: train the global attention system (W_k, W_q, α) on a frozen pretrained backbone,
once per training seed of the run, and measure the clean gain over the backbone on the test set.

The run's variants (gattanet.models.spec.AttentionSpec): iterations, heads, a top-down query, and
`finetune` (the backbone trained with the attention at its own `finetune_lr`); `attention: false` is the
fine-tuning control (the same backbone, epochs, images and seeds, no attention). The test set goes through
the shared first pass of every seed's model (gattanet.engine.fast_eval) where the models allow it (the
paper's one iteration on one frozen backbone, bottom-up), else through each model's own forward."""

import numpy as np
import torch

from gattanet.engine.evaluate import correct_batched, topk_accuracy
from gattanet.engine.fast_eval import shared_logits
from gattanet.io import write_json
from gattanet.engine.precision import autocast, autocast_dtype, precision_name
from gattanet.analysis.stats import effect_ci
from gattanet.models.spec import AttentionSpec
from pipeline.config import entry
from pipeline.data_source import DataSource
from pipeline import outputs
from pipeline.paths import attention_path, backbone_path
from pipeline.runs import load_run_backbone, save_run_model, train_attention
from pipeline.runtime import resolve_device
from pipeline.seeds import train_seeds


def work(params, key: str) -> list:
    """Each seed trained in turn (`train_subset` images per epoch, a validation pass after each, at most
    `epochs`), then the test set once through the shared first pass of every seed's model."""
    from pipeline.work import Work, dataset_sizes, least, model_spec, num, seeds_text, subset_size
    from gattanet.cost.rates import Probe

    run = entry(params.attention, key, "attention")
    s, arch, ev = dataset_sizes(params, run.dataset), params.backbones[run.backbone].arch, params.eval_batch_size
    kind = "gattanet" if run.attention else "backbone"  # the fine-tuning control trains the backbone alone
    spec, seeds, n = model_spec(run.dataset, arch, kind, run), len(run.seeds), subset_size(s.train, run.train_subset)
    early = least(run.epochs, run.patience)
    test = Probe("shared", spec, ev, n=seeds) if shares_first_pass(run) else Probe("separate", spec, ev, n=seeds)
    return [Work("train-attn", key, f"{seeds_text(seeds)} × {num(n)} × ≤{run.epochs} ep", seeds * n * run.epochs,
                 Probe("train", spec, run.batch_size, l2=run.l2 if run.attention else 0.0), least=early, sharded=True),
            Work("train-attn", key, f"val {seeds} × {num(s.val)} × ≤{run.epochs}", seeds * s.val * run.epochs,
                 Probe("eval", spec, ev), least=early),
            Work("train-attn", key, f"test {num(s.test)} × (1+{seeds})", s.test, test)]


def shares_first_pass(run) -> bool:
    """Whether the run's models are evaluated through one shared first pass (the spec says; the fine-tuning
    control, `attention: false`, has no GAttANet to share it)."""
    return run.attention and AttentionSpec.from_settings(run).shares_first_pass


def eval_logits(run, models: dict, backbone):
    """The test-time logits function over a batch: {"baseline": the pretrained backbone's, "S": seed S's}."""
    if shares_first_pass(run):
        return lambda x: shared_logits({str(s): m for s, m in models.items()}, x)

    def separate(x):
        with torch.no_grad():
            return {"baseline": backbone(x)} | {str(s): m(x) for s, m in models.items()}
    return separate


def run(params, key: str) -> None:
    run_cfg = entry(params.attention, key, "attention")
    device = resolve_device(params.device)
    source = DataSource(params, run_cfg.dataset, device)
    backbone = load_run_backbone(run_cfg, device)
    dtype = autocast_dtype(device, params.amp)

    def train(seed, resume, on_epoch):
        return train_attention(run_cfg, source, device, backbone, seed, global_seed=params.seed, amp=params.amp,
                               resume=resume, on_epoch=on_epoch)

    def evaluate(models):
        with autocast(device, dtype):
            return correct_batched(eval_logits(run_cfg, models, backbone), source.loader("test"), topk=source.topk)

    def save(seed, model):
        save_run_model(attention_path(key, seed), run_cfg, model, backbone_path(run_cfg.backbone),
                       {"run": key, "backbone_run": run_cfg.backbone, "dataset": run_cfg.dataset, "seed": seed})

    def write(trained, hits):
        models, results = trained.models, trained.results
        base = hits["baseline"][:, 0].numpy().astype(float)
        gains = np.stack([hits[str(s)][:, 0].numpy() - base for s in run_cfg.seeds])
        gain = effect_ci([(1.0, gains)])
        per_seed = [{"seed": s, "gattanet_acc": topk_accuracy(hits[str(s)], source.topk)["top1"],
                     "gattanet_top5": topk_accuracy(hits[str(s)], source.topk).get("top5"),
                     "val_acc": results[s].best_val_acc, "best_epoch": results[s].best_epoch,
                     "epochs_run": results[s].epochs_run, "alpha": alpha_of(models[s])} for s in run_cfg.seeds]
        baseline = topk_accuracy(hits["baseline"], source.topk)
        model = models[run_cfg.seeds[0]]
        net = model.backbone if run_cfg.attention else model  # the control's model is the backbone
        attention = model.attention_parameters() if run_cfg.attention else []
        write_json(outputs.TRAIN_ATTN_METRICS.path(key), outputs.TRAIN_ATTN_METRICS.record({
            "run": key, "backbone_run": run_cfg.backbone, "arch": net.arch, "dataset": run_cfg.dataset,
            "attn_dim": run_cfg.attn_dim, "lesion": model.lesion if run_cfg.attention else run_cfg.lesion,
            "iterations": run_cfg.iterations, "heads": run_cfg.heads, "query": run_cfg.query,
            "finetune": run_cfg.finetune, "attention": run_cfg.attention,
            "seeds": list(run_cfg.seeds), "test_images": len(base),
            "backbone_params": sum(p.numel() for p in net.parameters()),
            "attention_params": sum(p.numel() for p in attention),
            "baseline_acc": baseline["top1"], "baseline_top5": baseline.get("top5"),
            "gattanet_acc": float(np.mean([r["gattanet_acc"] for r in per_seed])),
            "gain": gain.as_dict(), "per_seed": per_seed,
            "precision": precision_name(dtype), "seconds": trained.seconds, "device": str(device),
            "taps": [t.as_dict() for t in net.taps()],
        }))
        print(f"train-attn {key}{'' if run_cfg.attention else ' (fine-tuning control, no attention)'}: "
              f"baseline {baseline['top1']:.4f}, gain {100 * gain.mean:+.2f} pts "
              f"[{100 * gain.low:+.2f}, {100 * gain.high:+.2f}] over {len(run_cfg.seeds)} seeds")

    train_seeds("train-attn", key, run_cfg.seeds, train, evaluate, write, save=save,
                curves=outputs.TRAIN_ATTN_CURVES.path(key))  # DVCLive: each seed's curves under seed-S/


def alpha_of(model) -> list:
    """The trained α as JSON: one float per tap, a list per tap with several heads; none for the control."""
    att = getattr(model, "attention", None)
    if att is None:
        return []
    if att.alpha.dim() == 1:
        return [float(a) for a in att.alpha.detach().cpu()]
    return att.alpha.detach().cpu().tolist()
