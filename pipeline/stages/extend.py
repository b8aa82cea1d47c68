"""extend@KEY: one of the paper's open questions as an experiment. Extension KEY is attention run RUN with some
settings changed (iterations, heads, a top-down query, fine-tuning, or the fine-tuning control without attention;
equations in gattanet.models.spec); it is trained on RUN's backbone with RUN's seeds, training images and settings,
then it and RUN's own models see the same test images, clean and at σ* (the noise sweep's images, draws and clip).
Written: the variant's checkpoints, its per-image correctness beside RUN's (git-tracked, from which the report
recomputes every interval), and its parameters, multiply-adds and inference speed beside RUN's."""

import numpy as np

from gattanet.cost.bench import forward_macs, inference_rates
from gattanet.engine.fast_eval import shared_logits
from gattanet.engine.precision import autocast, autocast_dtype, precision_name
from gattanet.analysis.sweeps import sweep_correct
from gattanet.io import atomic_path, write_json
from pipeline import outputs
from pipeline.config import entry
from pipeline.data_source import DataSource
from pipeline.paths import backbone_path, extension_path
from pipeline.recompute import extension_estimates
from pipeline.runs import load_run_backbone, load_run_models, save_run_model, train_attention
from pipeline.runtime import resolve_device
from pipeline.seeds import train_seeds

SPEED_BATCH = 128  # images per timed inference batch (the training batch of every profile's toy runs)
SPEED_WARMUP, SPEED_REPEATS = 1, 5  # inference_rates' untimed and timed passes of the batch, per model


def variant(params, key: str):
    """(the extension's entry, the attention run it varies, the run the variant trains)."""
    ext = entry(params.extensions, key, "extensions")
    run = params.attention[ext.run]
    return ext, run, ext.variant_of(run)


def sigmas(params) -> list[float]:
    """Where the variant and its run are compared: clean, and at σ* (noise.peak_sigma)."""
    return [0.0, params.noise.peak_sigma]


def work(params, key: str) -> list:
    """The variant trained per seed as train-attn trains a run (at most its epochs, a validation pass after each);
    then the noise sweep's test images at 2 σ through RUN's shared first pass and each variant model's own forward;
    then one batch through the first seed's variant and run model, for their speed and their multiply-adds."""
    from gattanet.cost.rates import Probe
    from pipeline.work import Work, dataset_sizes, least, model_spec, num, seeds_text, subset_size

    _, run, var = variant(params, key)
    s, arch, ev = dataset_sizes(params, run.dataset), params.backbones[run.backbone].arch, params.eval_batch_size
    spec = model_spec(run.dataset, arch, "gattanet", var) if var.attention else model_spec(run.dataset, arch)
    seeds, n, early = len(run.seeds), subset_size(s.train, run.train_subset), least(run.epochs, run.patience)
    test = 2 * subset_size(s.test, params.noise.test_subset)
    ref = model_spec(run.dataset, arch, "gattanet", run)
    check = (SPEED_WARMUP + SPEED_REPEATS + 1) * subset_size(s.test, SPEED_BATCH)  # timed passes, then the MACs count
    return [Work("extend", key, f"{seeds_text(seeds)} × {num(n)} × ≤{run.epochs} ep", seeds * n * run.epochs,
                 Probe("train", spec, run.batch_size, l2=run.l2 if var.attention else 0.0), least=early, sharded=True),
            Work("extend", key, f"val {seeds} × {num(s.val)} × ≤{run.epochs}", seeds * s.val * run.epochs,
                 Probe("eval", spec, ev), least=early),
            Work("extend", key, f"2 σ × {num(test // 2)} × (1+{seeds}) shared", test,
                 Probe("shared", ref, params.noise.batch_size, n=seeds)),
            Work("extend", key, f"2 σ × {num(test // 2)} × {seeds} variants, own", seeds * test,
                 Probe("eval", spec, params.noise.batch_size)),
            Work("extend", key, f"speed and MACs: {num(check)} × (variant, run)", check, Probe("eval", spec, SPEED_BATCH)),
            Work("extend", key, "", check, Probe("eval", ref, SPEED_BATCH))]


def run(params, key: str) -> None:
    ext, _, var = variant(params, key)
    device = resolve_device(params.device)
    source = DataSource(params, var.dataset, device)
    backbone = load_run_backbone(var, device)
    dtype = autocast_dtype(device, params.amp)

    def train(seed, resume, on_epoch):  # the run's seeds: the same derived seed drives both models of a pair
        return train_attention(var, source, device, backbone, seed, global_seed=params.seed, amp=params.amp,
                               resume=resume, on_epoch=on_epoch, stage="extend")

    def evaluate(models):
        """(hits, the run's models, their inference speed, their multiply-adds)."""
        reference = load_run_models(params, ext.run, device)

        def logits(x):
            return shared_logits({str(s): m for s, m in reference.items()}, x) | {f"v{s}": m(x) for s, m in models.items()}

        with autocast(device, dtype):
            hits = sweep_correct(logits, source.noisy_test(params.noise, params.noise.test_subset), sigmas(params))
            x, _ = next(iter(source.loader("test", SPEED_BATCH, limit=SPEED_BATCH).epoch(0)))
            first, ref_first = models[var.seeds[0]], reference[var.seeds[0]]
            speed = inference_rates({"variant": first, "reference": ref_first}, x, SPEED_REPEATS, SPEED_WARMUP)
            macs = {"variant": forward_macs(first, x), "reference": forward_macs(ref_first, x)}
        return hits, reference, speed, macs

    def save(seed, model):
        save_run_model(extension_path(key, seed), var, model, backbone_path(var.backbone),
                       {"run": key, "backbone_run": var.backbone, "dataset": var.dataset, "seed": seed,
                        "extends": ext.run})

    def write(trained, evaluated):
        hits, reference, speed, macs = evaluated
        first, ref_first = trained.models[var.seeds[0]], reference[var.seeds[0]]
        baseline = hits["baseline"]                                   # (σ, N)
        gattanet = np.stack([hits[str(s)] for s in var.seeds])        # (seed, σ, N)
        variant_hits = np.stack([hits[f"v{s}"] for s in var.seeds])   # (seed, σ, N)
        with atomic_path(outputs.EXTENSION_CORRECT.path(key)) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, sigmas=np.array(sigmas(params)), seeds=np.array(var.seeds), baseline=baseline,
                                gattanet=gattanet, variant=variant_hits)
        est = extension_estimates(baseline, gattanet, variant_hits)  # as the report recomputes them
        results = trained.results
        write_json(outputs.EXTENSION_METRICS.path(key), outputs.EXTENSION_METRICS.record({
            "key": key, "run": ext.run, "changes": ext.changes, "arch": params.backbones[var.backbone].arch,
            "dataset": var.dataset, "attn_dim": var.attn_dim, "iterations": var.iterations, "heads": var.heads,
            "query": var.query, "finetune": var.finetune, "finetune_lr": var.finetune_lr, "attention": var.attention,
            "seeds": list(var.seeds), "test_images": int(baseline.shape[1]), "sigmas": sigmas(params),
            "trainable_params": sum(p.numel() for p in _trained(first, var)),
            "reference_params": sum(p.numel() for p in ref_first.attention_parameters()),
            "macs_per_image": macs["variant"], "reference_macs_per_image": macs["reference"],
            "infer_img_per_s": speed["variant"], "reference_infer_img_per_s": speed["reference"],
            "baseline_acc": baseline.mean(axis=1).tolist(), "reference_acc": gattanet.mean(axis=(0, 2)).tolist(),
            "variant_acc": variant_hits.mean(axis=(0, 2)).tolist(), "variant_per_seed": variant_hits.mean(axis=2).tolist(),
            "gain": est["gain"], "vs_gattanet": est["vs_gattanet"],
            "per_seed": [{"seed": s, "val_acc": results[s].best_val_acc, "best_epoch": results[s].best_epoch,
                          "epochs_run": results[s].epochs_run} for s in var.seeds],
            "precision": precision_name(dtype), "seconds": trained.seconds, "device": str(device)}))
        d = est["vs_gattanet"][0]
        print(f"extend {key} ({', '.join(f'{k}={v}' for k, v in ext.changes.items())}): clean "
              f"{variant_hits[:, 0].mean():.4f} vs {ext.run} {gattanet[:, 0].mean():.4f}, "
              f"{100 * d['mean']:+.2f} pts [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]")

    train_seeds("extend", key, var.seeds, train, evaluate, write, save=save,
                curves=outputs.EXTENSION_CURVES.path(key))


def _trained(model, var) -> list:
    """What the variant trains: the attention (and the backbone when fine-tuned); the control: the backbone."""
    if not var.attention:
        return list(model.parameters())
    return list(model.attention_parameters()) + (list(model.backbone_parameters()) if var.finetune else [])
