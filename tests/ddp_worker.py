"""A small training run for tests/test_distributed.py, in one process or under torchrun.

    python tests/ddp_worker.py OUT MODE [--kill-at-epoch E] [--resume PATH]
    torchrun --standalone --nproc-per-node 2 tests/ddp_worker.py OUT MODE ...

MODE: `attention` (GAttANet on a frozen toy backbone) or `backbone` (the toy CNN trained whole). No
dropout, so one process and several must agree up to the order of float sums. Rank 0 saves the trained
weights and the history to OUT.
"""

from __future__ import annotations

import argparse
import os

import torch

from gattanet.engine import distributed
from gattanet.models.attention import GlobalAttention
from gattanet.data.augment import Augment
from gattanet.data.datasets import TensorData
from gattanet.data.loader import TensorLoader
from gattanet.models.gattanet import GAttANet
from gattanet.models.toy import ToyCNN
from gattanet.engine.resume import Resume
from gattanet.engine.train import TrainConfig, fit

N_TRAIN, N_VAL, BATCH = 203, 64, 32  # 203 = 6 full batches + 11: shares of 6 and 5 on two ranks


def data(n: int, seed: int) -> TensorData:
    """Four classes of 16×16 images told apart by brightness and a bright quadrant."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = torch.randint(0, 96, (n, 1, 16, 16), generator=g)
    images += (labels * 30).view(-1, 1, 1, 1)
    for c in range(4):
        r, q = divmod(c, 2)
        images[labels == c, :, 8 * r:8 * r + 8, 8 * q:8 * q + 8] += 40
    return TensorData(images.clamp(0, 255).to(torch.uint8), labels, (0.4,), (0.25,), ("a", "b", "c", "d"))


class KillAt:
    """The loader, but rank 0 dies (like kill -9) when epoch `at` starts, after epoch at-1 was saved."""

    def __init__(self, loader, at: int) -> None:
        self.loader, self.at = loader, at

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, e: int):
        if e == self.at and distributed.current().is_main:
            os._exit(9)
        return self.loader.epoch(e)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("mode", choices=["attention", "backbone"])
    ap.add_argument("--kill-at-epoch", type=int, default=0)
    ap.add_argument("--resume", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    world = distributed.init(torch.device("cpu"))

    torch.manual_seed(0)
    backbone = ToyCNN(in_channels=1, num_classes=4, widths=(8, 16, 16), hidden=32, dropout=0.0, input_size=16)
    if args.mode == "attention":
        model = GAttANet(backbone, GlobalAttention(backbone.taps(), 8, dropout=0.0))
        trained = list(model.attention_parameters())
        torch.nn.init.normal_(model.attention.alpha, std=0.1)  # α₀ = 0 would leave W_k, W_q without gradient
    else:
        model, trained = backbone, list(backbone.parameters())
    train = TensorLoader(data(N_TRAIN, 1), BATCH, shuffle=True, seed=5, world=world,
                         augment=Augment(rotation=10, shift=0.1, hflip=True))
    if args.kill_at_epoch:
        train = KillAt(train, args.kill_at_epoch)
    val = TensorLoader(data(N_VAL, 2), 50)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    result = fit(model, trained, train, val, TrainConfig(epochs=3, patience=3, lr=3e-3, l2=1e-4, seed=7),
                 resume=Resume(args.resume) if args.resume else None, label=f"{args.mode} rank {world.rank}", progress=False)
    if world.is_main:
        torch.save({"state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "initial": initial, "history": result.history, "world": world.size,
                    "resumed_seconds": result.resumed_seconds}, args.out)
    distributed.leave()


if __name__ == "__main__":
    main()
