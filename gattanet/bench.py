"""Throughput benchmark: the engine's training and inference paths against a bare PyTorch loop
on the toy backbone, measured in one run on this machine, with the target ratios."""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F

from gattanet.attention import GlobalAttention
from gattanet.augment import Augment
from gattanet.backbones import build_backbone
from gattanet.datasets import TensorData
from gattanet.loader import TensorLoader
from gattanet.model import GAttANet
from gattanet.placement import CHANNELS_LAST, place
from gattanet.train import Step, TrainConfig, train_epoch

TARGETS = {"pretrain_vs_bare": 0.9, "attn_vs_pretrain": 0.5,
           "gattanet_vs_backbone_infer": 0.4, "loader_vs_pretrain": 20}


def _random_data(n: int, seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return TensorData(images, torch.randint(0, 10, (n,), generator=g), (0.5,) * 3, (0.25,) * 3,
                      tuple(str(c) for c in range(10)))


def _best_rates(runs: dict[str, Callable[[int], None]], n_images: int, warmup: int, repeats: int,
                device: torch.device) -> dict[str, float]:
    """Images/s of each run (its best of `repeats`, after `warmup`); runs are interleaved so
    that a load spike from other processes hurts all of them alike."""
    def timed(fn: Callable[[int], None], e: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn(e)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    for e in range(warmup):
        for fn in runs.values():
            timed(fn, e)
    best = {name: float("inf") for name in runs}
    for e in range(warmup, warmup + repeats):
        for name, fn in runs.items():
            best[name] = min(best[name], timed(fn, e))
    return {name: n_images / t for name, t in best.items()}


def run_bench(device: str | torch.device | None = None, n_images: int = 2048, batch_size: int = 128,
              warmup: int = 2, repeats: int = 3) -> dict:
    """{"device", "img_per_s": {...}, "ratios": {...}, "targets": {...}, "settings": {...}}."""
    if n_images < 1 or batch_size < 1 or warmup < 0 or repeats < 1:
        raise ValueError(f"need n_images, batch_size, repeats >= 1 and warmup >= 0; got "
                         f"{n_images}, {batch_size}, {repeats}, {warmup}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=1, patience=1, lr=1e-3)
    data = _random_data(n_images)
    loader = TensorLoader(data, batch_size, shuffle=True, augment=Augment(), device=device,
                          channels_last=CHANNELS_LAST)

    bare_model = build_backbone("toy", 10, 3).to(device)
    bare_opt = torch.optim.Adam(bare_model.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(len(y), 3, 32, 32, generator=g).to(device), y.to(device))
               for y in data.labels.split(batch_size)]

    def bare_loop(_: int) -> None:
        bare_model.train()
        for x, y in batches:
            bare_opt.zero_grad(set_to_none=True)
            F.cross_entropy(bare_model(x), y).backward()
            bare_opt.step()

    backbone = place(build_backbone("toy", 10, 3), device)  # the engine's placement, as in the pipeline
    pretrain = Step(backbone, backbone.parameters(), cfg)
    gattanet = place(GAttANet(build_backbone("toy", 10, 3), GlobalAttention(backbone.taps(), 16)), device)
    attn = Step(gattanet, gattanet.attention_parameters(), TrainConfig(1, 1, lr=1e-3, l2=1e-5))

    engine_batches = [(x.contiguous(memory_format=torch.channels_last) if CHANNELS_LAST else x, y)
                      for x, y in batches]

    def infer(model: torch.nn.Module) -> Callable[[int], None]:
        @torch.no_grad()
        def run(_: int) -> None:
            model.eval()  # the training runs switch it back to train mode
            for x, _y in engine_batches:
                model(x)
        return run

    def iterate(e: int) -> None:
        for _ in loader.epoch(e):
            pass

    rates = _best_rates({
        "bare_loop": bare_loop,
        "pretrain_step": lambda e: train_epoch(pretrain, loader, e),
        "attn_step": lambda e: train_epoch(attn, loader, e),
        "backbone_infer": infer(backbone),
        "gattanet_infer": infer(gattanet),
        "loader": iterate,
    }, n_images, warmup, repeats, device)
    ratios = {
        "pretrain_vs_bare": rates["pretrain_step"] / rates["bare_loop"],
        "attn_vs_pretrain": rates["attn_step"] / rates["pretrain_step"],
        "gattanet_vs_backbone_infer": rates["gattanet_infer"] / rates["backbone_infer"],
        "loader_vs_pretrain": rates["loader"] / rates["pretrain_step"],
    }
    return {"device": str(device), "img_per_s": rates, "ratios": ratios, "targets": dict(TARGETS),
            "settings": {"n_images": n_images, "batch_size": batch_size, "warmup": warmup,
                         "repeats": repeats, "threads": torch.get_num_threads()}}
