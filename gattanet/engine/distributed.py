"""Data parallelism under torchrun: the process group from torchrun's environment, each rank's share
of a global batch, sums across ranks, and rank 0 as the only writer.

One process (no torchrun) is the world of size 1, and every function here is then a no-op, so the
engine has one code path. The arithmetic follows the single process exactly where it can: every rank
walks the same global batches (same order, same augmentation draws) and trains on its contiguous share;
each rank's loss is weighted by its share of the global batch, so DDP's mean of the ranks' gradients is
the gradient of the global batch's mean loss. What cannot match is randomness drawn per rank (dropout).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from gattanet.world import SINGLE, World


def launched() -> bool:
    """True in a process that torchrun started (it sets WORLD_SIZE, RANK and LOCAL_RANK)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init(device: torch.device) -> World:
    """Join torchrun's process group (NCCL on CUDA, gloo on the CPU) if this process is one of several;
    the world of this process either way."""
    if not launched() or int(os.environ["WORLD_SIZE"]) == 1:
        return SINGLE
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return current()


def current() -> World:
    """The world this process belongs to: from the process group if one is initialised, else one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def leave() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: list[float], world: World, device: torch.device) -> list[float]:
    """The element-wise sum of `values` over every rank (float64), for epoch totals."""
    if world.size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def data_parallel(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """`model` wrapped in DistributedDataParallel when there are several ranks (gradients of the
    trainable parameters averaged across ranks after each backward); the model itself otherwise.
    On CUDA, batch norms become SyncBatchNorm so their statistics span the global batch."""
    if world.size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        sync_batchnorms(model)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sync_batchnorms(model: nn.Module) -> nn.Module:
    """`model` with its plain BatchNorm1d/2d/3d layers replaced, in place, by SyncBatchNorm (statistics over
    the global batch). Subclasses are left alone: torch's convert_sync_batchnorm would replace them too and
    drop what they add (attention's UnitBatchNorm reshapes its input), so their statistics stay per rank."""
    for name, child in model.named_children():
        if type(child) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
            setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
        else:
            sync_batchnorms(child)
    return model


def from_main(values: list[float], world: World, device: torch.device) -> list[float]:
    """Rank 0's `values` on every rank, so that decisions taken from them (early stopping) are the same."""
    if world.size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.tolist()


def training_done() -> bool:
    """Leave the process group once every rank has trained, so that what rank 0 does alone afterwards
    (evaluation, a SyncBatchNorm in a timing step) waits on no rank that is gone; True on the process that
    goes on to evaluate and write (rank 0, or the only one)."""
    world = current()
    leave()
    return world.is_main


def share_weight(local: int, global_: int, world: World) -> float:
    """The factor on a rank's mean loss that makes DDP's average over ranks the global batch's mean:
    world size × local share of the batch."""
    return world.size * local / global_
