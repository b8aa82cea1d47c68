"""baselines@METHOD: a related-work attention module (or GAttANet itself, or the wider-toy control)
on the same frozen backbone, budget, data and training settings, measured like GAttANet."""

import copy
import time

import torch

from gattanet.adapters.budget import UNMATCHABLE, match_width, within_budget, wider_toy_widths
from gattanet.adapters.model import AdaptedModel
from gattanet.backbones import build_backbone
from gattanet.checkpoint import load_backbone
from gattanet.evaluate import accuracies
from gattanet.io import write_json
from gattanet.placement import place
from gattanet.sweeps import noise_sweep
from gattanet.train import TrainConfig, fit
from pipeline import common
from pipeline.common import BACKBONES, RESULTS, RESUME
from pipeline.stages.train_attn import build


def run(params, method: str) -> None:
    cfg = params.baselines
    if method not in cfg.methods:
        raise ValueError(f"baselines: {method!r} is not in baselines.methods ({', '.join(cfg.methods)})")
    att_run = params.attention[cfg.run]
    bb_run = params.backbones[att_run.backbone]
    device = common.resolve_device(params.device)
    source = common.DataSource(params, att_run.dataset, device)
    backbone, _ = load_backbone(BACKBONES / f"{att_run.backbone}.pt", device=str(device),
                                expect={"kind": "backbone", "dataset": att_run.dataset})
    place(backbone, device)
    gattanet_params = sum(p.numel() for p in build(params, att_run, copy.deepcopy(backbone)).attention_parameters())
    taps = backbone.taps()
    width, train_settings = None, (att_run, cfg.train_subset)
    common.seeded(params.seed)
    with common.stopwatch() as clock:
        if method == "gattanet":
            model = place(build(params, att_run, backbone), device)
            trainable = model.attention_parameters()
        elif method == "wider-toy":
            if bb_run.arch != "toy":
                raise ValueError(f"baselines: wider-toy needs a toy backbone; {att_run.backbone} is {bb_run.arch}")
            total = sum(p.numel() for p in backbone.parameters()) + gattanet_params
            widths, hidden, _ = wider_toy_widths(total, backbone.in_channels, backbone.num_classes,
                                                 backbone.input_size)
            model = build_backbone("toy", backbone.num_classes, backbone.in_channels, widths=widths,
                                   hidden=hidden, input_size=backbone.input_size)
            place(model, device)
            width, trainable = {"widths": list(widths), "hidden": hidden}, list(model.parameters())
            train_settings = (bb_run, bb_run.train_subset)  # trained from scratch like the backbone
        else:
            width, _ = match_width(method, taps, gattanet_params)
            model = place(AdaptedModel(backbone, method, width), device)
            trainable = model.adapter_parameters()
        run_cfg, subset = train_settings
        epochs = cfg.epochs if method != "wider-toy" else run_cfg.epochs
        result = fit(model, trainable,
                     source.train_loader(run_cfg.batch_size, common.augment_of(run_cfg.augment), subset),
                     source.loader("val", 512),
                     TrainConfig(epochs=epochs, patience=run_cfg.patience, lr=run_cfg.lr,
                                 l2=getattr(run_cfg, "l2", 0.0), seed=params.seed, amp=params.amp),
                     resume_path=RESUME / f"baselines-{method}.pt", label=f"baselines {method}")
        model.eval()
        n_trainable = sum(p.numel() for p in trainable)
        sweep = noise_sweep(_evaluator(params, source, model, backbone), list(params.noise.sigmas),
                            list(params.noise.seeds))
        speed = _throughput(model, backbone, source, run_cfg.batch_size, trainable)
    i = min(range(len(sweep["sigmas"])), key=lambda j: abs(sweep["sigmas"][j] - cfg.peak_sigma))
    write_json(RESULTS / "baselines" / f"{method}.json", {
        "method": method, "run": cfg.run, "arch": bb_run.arch, "dataset": att_run.dataset, "width": width,
        "trainable_params": n_trainable, "gattanet_params": gattanet_params,
        "matchable": method not in UNMATCHABLE, "within_budget": within_budget(n_trainable, gattanet_params)
        if method != "wider-toy" else None,
        "clean_acc": sweep["gattanet"]["mean"][0] if sweep["sigmas"][0] == 0 else None,
        "baseline_acc": sweep["baseline"]["mean"][0] if sweep["sigmas"][0] == 0 else None,
        "peak_sigma": sweep["sigmas"][i], "acc_at_peak": sweep["gattanet"]["mean"][i],
        "baseline_at_peak": sweep["baseline"]["mean"][i],
        "sigmas": sweep["sigmas"], "acc": sweep["gattanet"]["mean"], "baseline": sweep["baseline"]["mean"],
        **speed, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
        "seconds": clock["seconds"], "device": str(device)})
    print(f"baselines {method}: {n_trainable:,} params (GAttANet {gattanet_params:,}), "
          f"clean {sweep['gattanet']['mean'][0]:.4f}, σ={sweep['sigmas'][i]}: {sweep['gattanet']['mean'][i]:.4f}")


def _evaluator(params, source, model, backbone):
    """evaluate_at(σ, seed) for noise_sweep: the method under 'gattanet', the plain backbone as baseline."""
    noise = params.noise

    def evaluate_at(sigma: float, seed: int) -> dict:
        loader = source.loader("test", noise.batch_size, sigma=sigma, noise_seed=seed, clip=noise.clip,
                               limit=params.baselines.test_subset)
        accs = accuracies({"baseline": backbone, "gattanet": model}, loader)
        return {k: v["top1"] for k, v in accs.items()}

    return evaluate_at


def _throughput(model, backbone, source, batch_size: int, trainable, batches: int = 8) -> dict:
    """Training and inference images/s of the method and of the plain backbone, on the same batches."""
    x, _ = next(iter(source.loader("test", batch_size).epoch(0)))
    y = torch.zeros(len(x), dtype=torch.long, device=x.device)

    def rate(fn) -> float:
        fn()  # warm-up
        start = time.perf_counter()
        for _ in range(batches):
            fn()
        return batches * len(x) / (time.perf_counter() - start)

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
