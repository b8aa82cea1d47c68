"""controls@KEY: the trivial explanations of attention run KEY's gain, on its frozen backbone, at its budget,
seeds and training images — the backbone trained on from its checkpoint, and heads recalibrated at no more
parameters than GAttANet's — each compared with GAttANet seed by seed on the same test images. Every model's
per-image correctness goes to KEY.npz (git-tracked), from which the report recomputes the intervals."""

import numpy as np

from gattanet.data.noise import derive_seed
from gattanet.engine.evaluate import correct_batched
from gattanet.engine.fast_eval import shared_logits
from gattanet.engine.placement import place
from gattanet.engine.precision import autocast, autocast_dtype, precision_name
from gattanet.engine.train import TrainConfig, fit
from gattanet.io import atomic_path, write_json
from gattanet.models.heads import HeadControl, trained_on
from pipeline.config import entry
from pipeline import outputs
from pipeline.paths import resume_path
from pipeline.recompute import controls_estimates
from pipeline.runs import augment_of, open_run, resume_at, training_context
from pipeline.runtime import seeded
from pipeline.seeds import train_seeds


def work(params, key: str) -> list:
    """Per method and seed, training with a validation pass per epoch (at most the run's epochs): more training
    is a backbone training step; a head's step is counted as a backbone forward (its own layers are tiny and
    no gradient enters the backbone); then the test set once through the backbone, GAttANet's shared pass and
    every control."""
    from gattanet.cost.rates import Probe
    from pipeline.work import Work, dataset_sizes, least, model_spec, num, seeds_text, subset_size

    cfg = entry(params.controls, key, "controls")
    att = params.attention[key]
    bb = params.backbones[att.backbone]
    s, seeds, ev = dataset_sizes(params, att.dataset), len(att.seeds), params.eval_batch_size
    backbone, gattanet = model_spec(att.dataset, bb.arch), model_spec(att.dataset, bb.arch, "gattanet", att)
    n, test, early = subset_size(s.train, att.train_subset), subset_size(s.test, cfg.test_subset), least(att.epochs, att.patience)
    works = []
    for method in cfg.methods:
        step = (Probe("train", backbone, bb.batch_size) if method == "more-training"
                else Probe("eval", backbone, att.batch_size))
        works += [Work("controls", key, f"{method}: {seeds_text(seeds)} × {num(n)} × ≤{att.epochs} ep",
                       seeds * n * att.epochs, step, least=early, sharded=True),
                  Work("controls", key, f"val {seeds} × {num(s.val)} × ≤{att.epochs}", seeds * s.val * att.epochs,
                       Probe("eval", backbone, ev), least=early)]
    return works + [Work("controls", key, f"test {num(test)} × (1+{seeds})", test, Probe("shared", gattanet, ev, n=seeds)),
                    Work("controls", key, f"test {num(test)} × {len(cfg.methods) * seeds} controls",
                         test * len(cfg.methods) * seeds, Probe("eval", backbone, ev))]


def run(params, key: str) -> None:
    cfg = entry(params.controls, key, "controls")
    att, device, source, gattanets = open_run(params, key)
    bb = params.backbones[att.backbone]
    backbone = gattanets[att.seeds[0]].backbone
    budget = sum(p.numel() for p in gattanets[att.seeds[0]].attention_parameters())
    dtype = autocast_dtype(device, params.amp)
    # GAttANet's seeds: same init draws, shuffling and training images
    jobs = [(method, seed) for method in cfg.methods for seed in att.seeds]

    def train(job, resume, on_epoch):
        method, seed = job
        train_seed = derive_seed(params.seed, seed)
        seeded(train_seed)
        if method == "more-training":  # the backbone's own optimiser settings and augmentation
            model = place(trained_on(backbone), device)
            trainable, settings = list(model.parameters()), (bb.batch_size, bb.augment, bb.lr, 0.0)
        else:
            model = place(HeadControl(backbone, method, budget), device)
            trainable, settings = model.head_parameters(), (att.batch_size, att.augment, att.lr, att.l2)
        batch_size, augment, lr, l2 = settings
        result = fit(
            model, trainable, source.train_loader(batch_size, augment_of(augment), att.train_subset, train_seed),
            source.loader("val"),
            TrainConfig(epochs=att.epochs, patience=att.patience, lr=lr, l2=l2, seed=train_seed, amp=params.amp),
            resume=resume_at(resume, training_context(att, source) | {"control": method, "controls": repr(cfg)}),
            label=f"controls {key} {method} seed {seed}", on_epoch=on_epoch)
        return model.eval(), result

    def evaluate(trained):
        named = {str(s): m for s, m in gattanets.items()}
        with autocast(device, dtype):
            return correct_batched(lambda x: shared_logits(named, x) | {f"{m}:{s}": c(x) for (m, s), c in trained.items()},
                                   source.loader("test", limit=cfg.test_subset))

    def write(trained, hits):
        base = hits["baseline"][:, 0].numpy().astype(float)

        def acc(name) -> np.ndarray:  # (seeds, N): per seed, per test image
            return np.stack([hits[f"{name}{s}"][:, 0].numpy().astype(float) for s in att.seeds])

        full = acc("")
        ctls = [acc(f"{method}:") for method in cfg.methods]
        correct = np.stack(ctls).astype(bool)  # (methods, seeds, N)
        est = controls_estimates(base.astype(bool), full.astype(bool), correct)  # as the report recomputes them
        rows = []
        for method, ctl, e in zip(cfg.methods, ctls, est["controls"]):
            per = [trained.results[method, s] for s in att.seeds]
            model = trained.models[method, att.seeds[0]]
            rows.append({"method": method, "kind": "training" if method == "more-training" else "head",
                         "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                         "rank": getattr(model, "rank", None) or None,
                         "accuracy": float(ctl.mean()), "per_seed": ctl.mean(axis=1).tolist(),
                         "gain": e["gain"], "vs_gattanet": e["vs_gattanet"],  # vs_gattanet: seed s − seed s
                         "kept": e["kept"],  # control − baseline − share · GAttANet's gain: the non-inferiority contrast
                         "epochs_run": [r.epochs_run for r in per], "best_epoch": [r.best_epoch for r in per],
                         "val_acc": [r.best_val_acc for r in per]})
        with atomic_path(outputs.CONTROLS_CORRECT.path(key)) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, seeds=np.array(att.seeds), methods=np.array(list(cfg.methods)),
                                baseline=base.astype(bool), gattanet=full.astype(bool), correct=correct)
        write_json(outputs.CONTROLS.path(key), outputs.CONTROLS.record({
            "run": key, "backbone_run": att.backbone, "arch": bb.arch, "dataset": att.dataset, "attn_dim": att.attn_dim,
            "seeds": list(att.seeds), "test_images": len(base), "gattanet_params": budget,
            "epochs": att.epochs, "patience": att.patience, "train_subset": att.train_subset,
            "baseline_acc": float(base.mean()), "gattanet_acc": float(full.mean()),
            "gattanet_gain": est["gattanet_gain"], "controls": rows,
            "precision": precision_name(dtype), "seconds": trained.seconds, "device": str(device)}))
        for r in rows:
            print(f"controls {key} {r['method']}: {r['trainable_params']:,} params, {r['accuracy']:.4f} "
                  f"(GAttANet {full.mean():.4f})")

    train_seeds("controls", key, jobs, train, evaluate, write,
                resume_of=lambda job: resume_path("controls", f"{key}-{job[0]}", job[1]))
