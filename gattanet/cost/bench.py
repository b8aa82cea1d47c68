"""Throughput benchmark: the engine's training, inference and evaluation paths against a bare
PyTorch loop on the toy backbone, in fp32 and in bf16 where the device computes it natively,
measured in one run on this machine, with the target ratios (checked in fp32)."""

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
from gattanet.data.loader import TensorLoader
from gattanet.models.gattanet import GAttANet
from gattanet.engine.placement import CHANNELS_LAST, place
from gattanet.engine.train import Step, TrainConfig, train_epoch

TARGETS = {"pretrain_vs_bare": 0.9, "attn_vs_pretrain": 0.5,
           "gattanet_vs_backbone_infer": 0.4, "loader_vs_pretrain": 20}


def _random_data(n: int, seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return TensorData(images, torch.randint(0, 10, (n,), generator=g), (0.5,) * 3, (0.25,) * 3,
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
                    batches: list[tuple[Tensor, Tensor]]) -> dict[str, Callable[[int], None]]:
    """The bench's model runs in one precision (dtype None: fp32), each on models of its own."""
    bare_model = build_backbone("toy", 10, 3).to(device)
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
    backbone = place(build_backbone("toy", 10, 3), device)  # the engine's placement, as in the pipeline
    pretrain = Step(backbone, backbone.parameters(), TrainConfig(1, 1, lr=1e-3, amp=amp))
    gattanet = place(GAttANet(build_backbone("toy", 10, 3), GlobalAttention(backbone.taps(), 16)), device)
    attn = Step(gattanet, gattanet.attention_parameters(), TrainConfig(1, 1, lr=1e-3, l2=1e-5, amp=amp))
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
    }


def run_bench(device: str | torch.device | None = None, n_images: int = 2048, batch_size: int = 128,
              warmup: int = 2, repeats: int = 3) -> dict:
    """{"device", "img_per_s": {precision: {measure: rate}}, "not_measured": {precision: why},
    "eval_shared_vs_naive": {precision: ratio}, "ratios", "targets", "settings"}. Precisions are
    fp32 and the one amp gives on `device` (bf16, or fp16 on a GPU without bf16), if any; the loader
    runs no model, so it is measured once, under fp32."""
    if n_images < 1 or batch_size < 1 or warmup < 0 or repeats < 1:
        raise ValueError(f"need n_images, batch_size, repeats >= 1 and warmup >= 0; got "
                         f"{n_images}, {batch_size}, {repeats}, {warmup}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp_dtype = precision.autocast_dtype(device, True)
    dtypes = {precision.precision_name(d): d for d in (None, amp_dtype)}  # just fp32 if amp_dtype is None
    data = _random_data(n_images)
    loader = TensorLoader(data, batch_size, shuffle=True, augment=Augment(), device=device,
                          channels_last=CHANNELS_LAST)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(len(y), 3, 32, 32, generator=g).to(device), y.to(device))
               for y in data.labels.split(batch_size)]

    def iterate(e: int) -> None:
        for _ in loader.epoch(e):
            pass

    runs: dict[Hashable, Callable[[int], None]] = {("fp32", "loader"): iterate}
    for name, dtype in dtypes.items():
        torch.manual_seed(0)  # the same initial weights in every precision
        runs |= {(name, measure): fn for measure, fn in _precision_runs(device, dtype, loader, batches).items()}
    rates = _best_rates(runs, n_images, warmup, repeats, device)
    img_per_s = {name: {measure: r for (p, measure), r in rates.items() if p == name} for name in dtypes}
    fp32 = img_per_s["fp32"]
    ratios = {
        "pretrain_vs_bare": fp32["pretrain_step"] / fp32["bare_loop"],
        "attn_vs_pretrain": fp32["attn_step"] / fp32["pretrain_step"],
        "gattanet_vs_backbone_infer": fp32["gattanet_infer"] / fp32["backbone_infer"],
        "loader_vs_pretrain": fp32["loader"] / fp32["pretrain_step"],
    }
    where = "GPU" if device.type == "cuda" else device.type.upper()
    return {"device": str(device), "img_per_s": img_per_s,
            "not_measured": {} if "bf16" in dtypes else {"bf16": f"not native on this {where}"},
            "eval_shared_vs_naive": {name: r["eval_shared"] / r["eval_naive"] for name, r in img_per_s.items()},
            "ratios": ratios, "targets": dict(TARGETS),
            "settings": {"n_images": n_images, "batch_size": batch_size, "warmup": warmup,
                         "repeats": repeats, "threads": torch.get_num_threads()}}
