"""baselines@METHOD: a related-work attention module (or GAttANet itself, or the wider-toy control)
on the same frozen backbone, budget, data and training settings, measured like GAttANet."""

import copy

import numpy as np
import torch

from gattanet.engine import distributed
from gattanet.adapters.budget import UNMATCHABLE, match_width, within_budget, wider_toy_widths
from gattanet.adapters.model import AdaptedModel
from gattanet.models.registry import build_backbone
from gattanet.cost.bench import timed  # synchronises CUDA: queued kernels are counted, not just launched
from gattanet.io import write_json
from gattanet.engine.placement import place
from gattanet.engine.precision import autocast, autocast_dtype, precision_name
from gattanet.analysis.sweeps import gain_at, sweep_correct
from gattanet.engine.train import TrainConfig, fit
from pipeline.data_source import DataSource
from pipeline.errors import UsageError
from pipeline.paths import RESULTS
from pipeline.runs import augment_of, training_context, training_seed
from pipeline.runtime import resolve_device, seeded, stopwatch
from pipeline.stages.train_attn import build, load_run_backbone, resume_file


def run(params, method: str) -> None:
    cfg = params.baselines
    if method not in cfg.methods:
        raise UsageError(f"baselines: {method!r} is not in baselines.methods ({', '.join(cfg.methods) or 'empty'})")
    att_run = params.attention[cfg.run]
    bb_run = params.backbones[att_run.backbone]
    device = resolve_device(params.device)
    source = DataSource(params, att_run.dataset, device)
    backbone = load_run_backbone(att_run, device)
    gattanet_params = sum(p.numel() for p in build(params, att_run, copy.deepcopy(backbone)).attention_parameters())
    noise, dtype = params.noise, autocast_dtype(device, params.amp)
    models, width, n_trainable, epochs_run, resumed = {}, None, 0, [], 0.0
    with stopwatch() as clock:
        for seed in att_run.seeds:  # the GAttANet run's seeds: the same evidence grade
            model, trainable, width, run_cfg, subset = _method(params, method, backbone, att_run, bb_run,
                                                               gattanet_params, seed)
            epochs = cfg.epochs if method != "wider-toy" else run_cfg.epochs
            train_seed = training_seed(params, seed)
            result = fit(model, trainable,
                         source.train_loader(run_cfg.batch_size, augment_of(run_cfg.augment), subset,
                                             train_seed),
                         source.loader("val"),
                         TrainConfig(epochs=epochs, patience=run_cfg.patience, lr=run_cfg.lr,
                                     l2=getattr(run_cfg, "l2", 0.0), seed=train_seed, amp=params.amp),
                         resume_path=resume_file(f"baselines-{method}", seed), keep_resume=True,
                         context=training_context(params, att_run, source)
                         | {"method": method, "baselines": repr(params.baselines)},
                         label=f"baselines {method} seed {seed}")
            models[str(seed)] = model.eval()
            n_trainable, epochs_run = sum(p.numel() for p in trainable), epochs_run + [result.epochs_run]
            resumed += result.resumed_seconds
        if not distributed.training_done():
            return  # under torchrun, rank 0 alone evaluates and writes

        def loader_at(sigma: float):
            return source.loader("test", noise.batch_size, sigma=sigma, noise_seed=params.seed, clip=noise.clip,
                                 limit=cfg.test_subset)

        with autocast(device, dtype):
            hits = sweep_correct(lambda x: {"baseline": backbone(x)} | {n: m(x) for n, m in models.items()},
                                 loader_at, noise.sigmas)
        speed = _throughput(models[str(att_run.seeds[0])], backbone, source, run_cfg.batch_size, trainable)
    acc = np.stack([hits[n] for n in models])  # (seed, σ, N)
    k = list(noise.sigmas).index(noise.peak_sigma)
    write_json(RESULTS / "baselines" / f"{method}.json", {
        "method": method, "run": cfg.run, "arch": bb_run.arch, "dataset": att_run.dataset, "width": width,
        "seeds": list(att_run.seeds), "test_images": int(acc.shape[2]),
        "trainable_params": n_trainable, "gattanet_params": gattanet_params,
        "matchable": method not in UNMATCHABLE, "within_budget": within_budget(n_trainable, gattanet_params)
        if method != "wider-toy" else None,
        "clean_acc": float(acc[:, 0].mean()), "baseline_acc": float(hits["baseline"][0].mean()),
        "clean_gain": gain_at(hits["baseline"], acc, 0).as_dict(),
        "peak_sigma": noise.peak_sigma, "acc_at_peak": float(acc[:, k].mean()),
        "baseline_at_peak": float(hits["baseline"][k].mean()), "gain_at_peak": gain_at(hits["baseline"], acc, k).as_dict(),
        "sigmas": list(noise.sigmas), "acc": acc.mean(axis=(0, 2)).tolist(),
        "baseline": hits["baseline"].mean(axis=1).tolist(),
        **speed, "epochs_run": epochs_run, "precision": precision_name(dtype),
        "seconds": round(clock["seconds"] + resumed, 3), "device": str(device)})  # + time before a kill
    for seed in att_run.seeds:
        resume_file(f"baselines-{method}", seed).unlink(missing_ok=True)
    print(f"baselines {method}: {n_trainable:,} params (GAttANet {gattanet_params:,}), "
          f"clean {acc[:, 0].mean():.4f}, σ*={noise.peak_sigma}: {acc[:, k].mean():.4f}")


def _method(params, method: str, backbone, att_run, bb_run, gattanet_params: int, seed: int):
    """(model, trainable params, width, training settings, train subset) of one method for one seed."""
    seeded(training_seed(params, seed))
    if method == "gattanet":
        model = place(build(params, att_run, backbone), backbone_device(backbone))
        return model, model.attention_parameters(), None, att_run, params.baselines.train_subset
    if method == "wider-toy":  # validated: the backbone is a toy one
        total = sum(p.numel() for p in backbone.parameters()) + gattanet_params
        widths, hidden, _ = wider_toy_widths(total, backbone.in_channels, backbone.num_classes, backbone.input_size)
        model = build_backbone("toy", backbone.num_classes, backbone.in_channels, widths=widths, hidden=hidden,
                               input_size=backbone.input_size)
        place(model, backbone_device(backbone))
        # trained from scratch like the backbone
        return model, list(model.parameters()), {"widths": list(widths), "hidden": hidden}, bb_run, bb_run.train_subset
    width, _ = match_width(method, backbone.taps(), gattanet_params)
    model = place(AdaptedModel(backbone, method, width), backbone_device(backbone))
    return model, model.adapter_parameters(), width, att_run, params.baselines.train_subset


def backbone_device(backbone):
    return next(backbone.parameters()).device


def _throughput(model, backbone, source, batch_size: int, trainable, batches: int = 8) -> dict:
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
