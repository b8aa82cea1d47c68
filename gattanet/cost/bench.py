"""Throughput benchmark: the engine's training, inference and evaluation paths against a bare
PyTorch loop on the toy backbone, in fp32 and in bf16 where the device computes it natively,
measured in one run on this machine, with the target ratios (checked in every precision it measures)."""

from __future__ import annotations

import time
from typing import Callable, Hashable

import torch
import torch.nn.functional as F
from torch import Tensor

from gattanet.engine import precision
from gattanet.models.attention import GlobalAttention
from gattanet.data.augment import Augment
from gattanet.models.registry import build_backbone
from gattanet.data.datasets import TensorData
from gattanet.engine.fast_eval import shared_logits
from gattanet.data.loader import Finish, TensorLoader
from gattanet.models.gattanet import GAttANet
from gattanet.engine.placement import CHANNELS_LAST, place
from gattanet.engine.train import Step, TrainConfig, train_epoch

TARGETS = {"pretrain_vs_bare": 0.9, "attn_vs_pretrain": 0.5,
           "gattanet_vs_backbone_infer": 0.4, "loader_vs_pretrain": 20}
ATTENTION_DIMS = (16, 64)  # the default profile's two attention dimensions
# issue 19's targets, in the precision amp gives (bf16 where native): each GAttANet training step against
# the backbone's, and the shared evaluation at d = 64 against itself at d = 16
ATTENTION_TARGETS = {"d16_vs_backbone_step": 0.8, "d64_vs_backbone_step": 0.5, "eval_d64_vs_d16": 0.8}


def step_macs(model: torch.nn.Module, x: Tensor, y: Tensor) -> int:
    """Multiply-adds of one training step (forward and backward of the cross-entropy) of `model` as it is,
    counted by torch's FlopCounterMode (convolutions and matmuls; FLOPs / 2). A frozen backbone's weights
    get no gradients, so a GAttANet step counts pass 1, its keys and queries with their weight gradients,
    pass 2 and pass 2's input gradients."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() // 2


def forward_macs(model: torch.nn.Module, x: Tensor) -> float:
    """Multiply-adds per image of one inference forward of `model` on batch `x` (FlopCounterMode; FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 2 / len(x)


def inference_rates(models: dict[Hashable, torch.nn.Module], x: Tensor, repeats: int = 5,
                    warmup: int = 1) -> dict[Hashable, float]:
    """Inference images/s of each model on batch `x`, its best of `repeats`, the models interleaved (a load spike
    from other processes hurts them alike): what the report's speed columns compare, measured in one run."""
    def run(model):
        def forward(_: int) -> None:
            with torch.no_grad():
                model(x)
        return forward

    return _best_rates({name: run(m) for name, m in models.items()}, len(x), warmup, repeats, x.device)


def allowed_ratios(in_channels: int, batch_size: int = 128) -> dict[str, float]:
    """{"d16": r, ...}: the backbone step's multiply-adds over a GAttANet step's at each dimension of
    ATTENTION_DIMS, counted on the equations' plain path (`fast` off): the speed the arithmetic allows."""
    torch.manual_seed(0)
    x, y = torch.randn(batch_size, in_channels, 32, 32), torch.randint(0, 10, (batch_size,))
    backbone = build_backbone("toy", 10, in_channels).train()
    base = step_macs(backbone, x, y)
    out = {}
    for dim in ATTENTION_DIMS:
        model = GAttANet(build_backbone("toy", 10, in_channels), GlobalAttention(backbone.taps(), dim)).train()
        model.attention.fast = False
        out[f"d{dim}"] = base / step_macs(model, x, y)
    return out


def _random_data(n: int, seed: int = 0, channels: int = 3) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, 32, 32), generator=g, dtype=torch.uint8)
    return TensorData(images, torch.randint(0, 10, (n,), generator=g), (0.5,) * channels, (0.25,) * channels,
                      tuple(str(c) for c in range(10)))


def timed(fn: Callable[[], object], device: str | torch.device) -> float:
    """Wall-clock seconds of `fn()`, GPU work included: on CUDA the device is synchronised before the
    clock starts (nothing queued earlier is counted) and before it stops (everything `fn` queued is)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _best_rates(runs: dict[Hashable, Callable[[int], None]], n_images: int, warmup: int, repeats: int,
                device: torch.device) -> dict[Hashable, float]:
    """Images/s of each run (its best of `repeats`, after `warmup`); runs are interleaved so
    that a load spike from other processes hurts all of them alike."""
    for e in range(warmup):
        for fn in runs.values():
            timed(lambda: fn(e), device)
    best = {name: float("inf") for name in runs}
    for e in range(warmup, warmup + repeats):
        for name, fn in runs.items():
            best[name] = min(best[name], timed(lambda: fn(e), device))
    return {name: n_images / t for name, t in best.items()}


def _precision_runs(device: torch.device, dtype: torch.dtype | None, loader: TensorLoader,
                    batches: list[tuple[Tensor, Tensor]], channels: int = 3) -> dict[str, Callable[[int], None]]:
    """The bench's model runs in one precision (dtype None: fp32), each on models of its own; the GAttANet
    training step and shared evaluation at d = 16 (attn_step, eval_shared) and at each other dimension
    of ATTENTION_DIMS (attn_step_dD, eval_shared_dD)."""
    bare_model = build_backbone("toy", 10, channels).to(device)
    bare_opt = torch.optim.Adam(bare_model.parameters(), lr=1e-3)

    def bare_loop(_: int) -> None:
        bare_model.train()
        for x, y in batches:
            bare_opt.zero_grad(set_to_none=True)
            with precision.autocast(device, dtype):
                loss = F.cross_entropy(bare_model(x), y)
            loss.backward()
            bare_opt.step()

    amp = dtype is not None
    backbone = place(build_backbone("toy", 10, channels), device)  # the engine's placement, as in the pipeline
    pretrain = Step(backbone, backbone.parameters(), TrainConfig(1, 1, lr=1e-3, amp=amp))
    gattanets = {dim: place(GAttANet(build_backbone("toy", 10, channels), GlobalAttention(backbone.taps(), dim)),
                            device) for dim in ATTENTION_DIMS}
    attns = {dim: Step(m, m.attention_parameters(), TrainConfig(1, 1, lr=1e-3, l2=1e-5, amp=amp))
             for dim, m in gattanets.items()}
    gattanet, attn = gattanets[16], attns[16]
    engine_batches = [(x.contiguous(memory_format=torch.channels_last) if CHANNELS_LAST else x, y)
                      for x, y in batches]

    def no_grad(model: torch.nn.Module, forward: Callable[[Tensor], object]) -> Callable[[int], None]:
        @torch.no_grad()
        def run(_: int) -> None:
            model.eval()  # the training runs switch it back to train mode
            with precision.autocast(device, dtype):
                for x, _y in engine_batches:
                    forward(x)
        return run

    return {
        "bare_loop": bare_loop,
        "pretrain_step": lambda e: train_epoch(pretrain, loader, e),
        "attn_step": lambda e: train_epoch(attn, loader, e),
        "backbone_infer": no_grad(backbone, backbone),
        "gattanet_infer": no_grad(gattanet, gattanet),
        # baseline + GAttANet logits of every image: one shared first pass (2 backbone passes) ...
        "eval_shared": no_grad(gattanet, lambda x: shared_logits({"gattanet": gattanet}, x)),
        # ... or each model's own forward (3 backbone passes)
        "eval_naive": no_grad(gattanet, lambda x: (gattanet.baseline(x), gattanet(x))),
    } | {measure: fn for dim, m in gattanets.items() if dim != 16 for measure, fn in (
        (f"attn_step_d{dim}", lambda e, s=attns[dim]: train_epoch(s, loader, e)),
        (f"eval_shared_d{dim}", no_grad(m, lambda x, m=m: shared_logits({"gattanet": m}, x))))}


def run_bench(device: str | torch.device | None = None, n_images: int = 2048, batch_size: int = 128,
              warmup: int = 2, repeats: int = 3, in_channels: int = 1) -> dict:
    """{"device", "img_per_s": {precision: {measure: rate}}, "not_measured": {precision: why},
    "eval_shared_vs_naive": {precision: ratio}, "ratios": {precision: {ratio: value}}, "targets", "attention",
    "settings"}. Precisions
    are fp32 and the one amp gives on `device` (bf16, or fp16 on a GPU without bf16), if any; the loader
    runs no model, so it is measured once, under fp32. Images are in_channels×32×32 (1: the default
    profile's Fashion-MNIST). "attention": the GAttANet training step at each of ATTENTION_DIMS against the
    backbone's training step (pretrain_step) beside the ratio its multiply-adds allow (`allowed_ratios`),
    and the shared evaluation at d = 64 against d = 16, per precision, with ATTENTION_TARGETS."""
    if n_images < 1 or batch_size < 1 or warmup < 0 or repeats < 1:
        raise ValueError(f"need n_images, batch_size, repeats >= 1 and warmup >= 0; got "
                         f"{n_images}, {batch_size}, {repeats}, {warmup}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp_dtype = precision.autocast_dtype(device, True)
    dtypes = {precision.precision_name(d): d for d in (None, amp_dtype)}  # just fp32 if amp_dtype is None
    data = _random_data(n_images, channels=in_channels)
    loader = TensorLoader(data, batch_size, Finish(data.mean, data.std, device=device, channels_last=CHANNELS_LAST),
                          shuffle=True, augment=Augment())
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(len(y), in_channels, 32, 32, generator=g).to(device), y.to(device))
               for y in data.labels.split(batch_size)]

    def iterate(e: int) -> None:
        for _ in loader.epoch(e):
            pass

    runs: dict[Hashable, Callable[[int], None]] = {("fp32", "loader"): iterate}
    for name, dtype in dtypes.items():
        torch.manual_seed(0)  # the same initial weights in every precision
        runs |= {(name, measure): fn for measure, fn in _precision_runs(device, dtype, loader, batches, in_channels).items()}
    rates = _best_rates(runs, n_images, warmup, repeats, device)
    others = {f"attn_step_d{d}" for d in ATTENTION_DIMS} | {f"eval_shared_d{d}" for d in ATTENTION_DIMS}
    img_per_s = {name: {measure: r for (p, measure), r in rates.items() if p == name and measure not in others}
                 for name in dtypes}
    attention_rates = {name: {"attn_step_d16": img_per_s[name]["attn_step"], "eval_shared_d16": img_per_s[name][
        "eval_shared"]} | {m: r for (p, m), r in rates.items() if p == name and m in others} for name in dtypes}
    loader = img_per_s["fp32"]["loader"]
    ratios = {name: {"pretrain_vs_bare": r["pretrain_step"] / r["bare_loop"],
                     "attn_vs_pretrain": r["attn_step"] / r["pretrain_step"],
                     "gattanet_vs_backbone_infer": r["gattanet_infer"] / r["backbone_infer"],
                     "loader_vs_pretrain": loader / r["pretrain_step"]} for name, r in img_per_s.items()}
    where = "GPU" if device.type == "cuda" else device.type.upper()
    return {"device": str(device), "img_per_s": img_per_s,
            "not_measured": {} if "bf16" in dtypes else {"bf16": f"not native on this {where}"},
            "eval_shared_vs_naive": {name: r["eval_shared"] / r["eval_naive"] for name, r in img_per_s.items()},
            "ratios": ratios, "targets": dict(TARGETS),
            "attention": {
                "img_per_s": attention_rates,
                "step_vs_backbone": {name: {f"d{d}": r[f"attn_step_d{d}"] / img_per_s[name]["pretrain_step"]
                                            for d in ATTENTION_DIMS} for name, r in attention_rates.items()},
                "allowed_by_macs": allowed_ratios(in_channels, batch_size),
                "eval_d64_vs_d16": {name: r["eval_shared_d64"] / r["eval_shared_d16"]
                                    for name, r in attention_rates.items()},
                "targets": dict(ATTENTION_TARGETS)},
            "settings": {"n_images": n_images, "batch_size": batch_size, "warmup": warmup, "repeats": repeats,
                         "in_channels": in_channels, "threads": torch.get_num_threads()}}
