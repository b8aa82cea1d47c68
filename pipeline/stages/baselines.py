"""baselines@METHOD: a related-work attention module (or GAttANet itself, or the wider-toy control)
on the same frozen backbone, budget, data and training settings, measured like GAttANet."""

import copy

import numpy as np
import torch

from gattanet.adapters.budget import UNMATCHABLE, within_budget
from gattanet.build import build_model
from gattanet.data.noise import derive_seed
from gattanet.models.spec import AttentionSpec
from gattanet.cost.bench import timed  # synchronises CUDA: queued kernels are counted, not just launched
from gattanet.io import atomic_path, write_json
from gattanet.engine.placement import place
from gattanet.engine.precision import autocast, autocast_dtype, precision_name
from gattanet.analysis.sweeps import gain_at, sweep_correct
from gattanet.engine.train import TrainConfig, fit
from pipeline.config import SCRATCH_TRACK
from pipeline.data_source import DataSource
from pipeline.errors import UsageError
from pipeline import outputs
from pipeline.runs import augment_of, load_run_backbone, resume_at, training_context
from pipeline.runtime import resolve_device, seeded
from pipeline.seeds import train_seeds


THROUGHPUT_BATCHES = 8  # timed batches per rate of _throughput, after one warm-up batch
THROUGHPUT_RATES = 4  # the method's and the backbone's inference and training rates


def training_settings(params, method: str):
    """(the params block a method trains with, its train subset, its epoch limit): the from-scratch track (the
    wider toy among it) trains like the backbone; every add-on like the GAttANet run, for `baselines.epochs`."""
    b = params.baselines
    run = params.attention[b.run]
    if method in SCRATCH_TRACK:
        bb = params.backbones[run.backbone]
        return bb, bb.train_subset, bb.epochs
    return run, b.train_subset, b.epochs


def work(params, method: str) -> list:
    """Per seed of the GAttANet run, training with a validation pass per epoch; the noise sweep of the backbone
    and every seed's model, each its own forward; the throughput check (a warm-up and THROUGHPUT_BATCHES
    batches of each of its THROUGHPUT_RATES rates, at the training batch)."""
    from gattanet.cost.rates import Probe
    from pipeline.work import Work, dataset_sizes, least, model_spec, num, seeds_text, subset_size

    b, ev, noise = params.baselines, params.eval_batch_size, params.noise
    run = params.attention[b.run]
    arch = params.backbones[run.backbone].arch
    s, seeds = dataset_sizes(params, run.dataset), len(run.seeds)
    backbone, spec = model_spec(run.dataset, arch), model_spec(run.dataset, arch, method, run)
    settings, train_subset, epochs = training_settings(params, method)
    batch, l2, early = settings.batch_size, getattr(settings, "l2", 0.0), least(epochs, settings.patience)
    n, test = subset_size(s.train, train_subset), subset_size(s.test, b.test_subset)
    check = (1 + THROUGHPUT_BATCHES) * subset_size(s.test, batch)  # _throughput's one batch of test images
    return [
        Work("baselines", method, f"{seeds_text(seeds)} × {num(n)} × ≤{epochs} ep", seeds * n * epochs,
             Probe("train", spec, batch, l2=l2), least=early, sharded=True),
        Work("baselines", method, f"val {seeds} × {num(s.val)} × ≤{epochs}", seeds * s.val * epochs,
             Probe("eval", spec, ev), least=early),
        Work("baselines", method, f"{len(noise.sigmas)} σ × {num(test)} × (1+{seeds} own)",
             len(noise.sigmas) * test, Probe("separate", spec, noise.batch_size, n=seeds)),
        Work("baselines", method, f"check {THROUGHPUT_RATES} × {num(check)}", check,
             Probe("train", spec, batch, l2=l2)),
        Work("baselines", method, "", check, Probe("eval", spec, batch)),
        Work("baselines", method, "", check, Probe("train", backbone, batch)),
        Work("baselines", method, "", check, Probe("eval", backbone, batch)),
    ]


def run(params, method: str) -> None:
    cfg = params.baselines
    if method not in cfg.methods:
        raise UsageError(f"baselines: {method!r} is not in baselines.methods ({', '.join(cfg.methods) or 'empty'})")
    att_run = params.attention[cfg.run]
    bb_run = params.backbones[att_run.backbone]
    device = resolve_device(params.device)
    source = DataSource(params, att_run.dataset, device)
    backbone = load_run_backbone(att_run, device)
    spec = AttentionSpec.from_settings(att_run)
    gattanet_params = spec.trainable_params(backbone.taps())
    noise, dtype = params.noise, autocast_dtype(device, params.amp)
    # the from-scratch track (validated: the backbone is a toy one) trains like the backbone
    settings, train_images, epochs = training_settings(params, method)
    built = {}  # seed -> the method's Built (its model, trainable parameters and width)

    def train(seed, resume, on_epoch):  # the GAttANet run's seeds: the same evidence grade
        train_seed = derive_seed(params.seed, seed)
        seeded(train_seed)
        built[seed] = build_model(method, backbone, spec, gattanet_params)
        model = place(built[seed].model, backbone_device(backbone))
        result = fit(model, built[seed].trainable,
                     source.train_loader(settings.batch_size, augment_of(settings.augment), train_images, train_seed),
                     source.loader("val"),
                     TrainConfig(epochs=epochs, patience=settings.patience, lr=settings.lr,
                                 l2=getattr(settings, "l2", 0.0), seed=train_seed, amp=params.amp),
                     resume=resume_at(resume, training_context(att_run, source)
                                      | {"method": method, "baselines": repr(params.baselines)}),
                     label=f"baselines {method} seed {seed}", on_epoch=on_epoch)
        return model.eval(), result

    def evaluate(models):
        """(hits, throughput): the noise sweep of the backbone and every seed, and the first seed's speed."""
        named = {str(s): m for s, m in models.items()}
        with autocast(device, dtype):
            hits = sweep_correct(lambda x: {"baseline": backbone(x)} | {n: m(x) for n, m in named.items()},
                                 source.noisy_test(noise, cfg.test_subset), noise.sigmas)
        first = att_run.seeds[0]
        return hits, _throughput(models[first], backbone, source, settings.batch_size, built[first].trainable)

    def write(trained, evaluated):
        hits, speed = evaluated
        acc = np.stack([hits[str(s)] for s in trained.models])  # (seed, σ, N)
        k = list(noise.sigmas).index(noise.peak_sigma)
        first = built[att_run.seeds[0]]  # every seed's model has the same size
        n_trainable, width = sum(p.numel() for p in first.trainable), first.width
        with atomic_path(outputs.BASELINES_CORRECT.path(method)) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, sigmas=np.array(list(noise.sigmas)), seeds=np.array(att_run.seeds),
                                baseline=hits["baseline"], correct=acc)  # before the JSON, its stage's last word
        write_json(outputs.BASELINES.path(method), outputs.BASELINES.record({
            "method": method, "run": cfg.run, "arch": bb_run.arch, "dataset": att_run.dataset, "width": width,
            "seeds": list(att_run.seeds), "test_images": int(acc.shape[2]),
            "trainable_params": n_trainable, "gattanet_params": gattanet_params,
            "matchable": method not in UNMATCHABLE, "within_budget": within_budget(n_trainable, gattanet_params)
            if method not in SCRATCH_TRACK else None,  # the from-scratch track is matched on the whole network
            "clean_acc": float(acc[:, 0].mean()), "baseline_acc": float(hits["baseline"][0].mean()),
            "clean_gain": gain_at(hits["baseline"], acc, 0).as_dict(),
            "peak_sigma": noise.peak_sigma, "acc_at_peak": float(acc[:, k].mean()),
            "baseline_at_peak": float(hits["baseline"][k].mean()),
            "gain_at_peak": gain_at(hits["baseline"], acc, k).as_dict(),
            "sigmas": list(noise.sigmas), "acc": acc.mean(axis=(0, 2)).tolist(),
            "baseline": hits["baseline"].mean(axis=1).tolist(),
            **speed, "epochs_run": [r.epochs_run for r in trained.results.values()],
            "precision": precision_name(dtype), "seconds": trained.seconds, "device": str(device)}))
        print(f"baselines {method}: {n_trainable:,} params (GAttANet {gattanet_params:,}), "
              f"clean {acc[:, 0].mean():.4f}, σ*={noise.peak_sigma}: {acc[:, k].mean():.4f}")

    train_seeds("baselines", method, att_run.seeds, train, evaluate, write)


def backbone_device(backbone):
    return next(backbone.parameters()).device


def _throughput(model, backbone, source, batch_size: int, trainable, batches: int = THROUGHPUT_BATCHES) -> dict:
    """Training and inference images/s of the method and of the plain backbone, on the same batches."""
    x, _ = next(iter(source.loader("test", batch_size, limit=batch_size).epoch(0)))  # one batch: no more decoded
    y = torch.zeros(len(x), dtype=torch.long, device=x.device)

    def rate(fn) -> float:
        fn()  # warm-up
        return batches * len(x) / timed(lambda: [fn() for _ in range(batches)], x.device)

    def train_step(net, ps):
        opt = torch.optim.Adam(ps, lr=0.0)
        def step():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        return step

    ref = copy.deepcopy(backbone).train()
    for p in ref.parameters():
        p.requires_grad_(True)
    state = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        infer_b, infer_m = rate(lambda: backbone(x)), rate(lambda: model(x))
    train_b = rate(train_step(ref, list(ref.parameters())))
    model.train()
    train_m = rate(train_step(model, trainable))
    model.eval()
    model.load_state_dict(state)
    return {"infer_img_per_s": infer_m, "backbone_infer_img_per_s": infer_b, "rel_infer": infer_m / infer_b,
            "train_img_per_s": train_m, "backbone_train_img_per_s": train_b, "rel_train": train_m / train_b}
