"""The GPU path, on CUDA only (marker `gpu`; skipped with its reason on a machine without CUDA, so CPU CI
never runs them): the shared evaluation against each model's plain forward in bf16, batches that stay on
the device, channels_last placement, a one-rank NCCL process group around DDP, and a checkpoint round trip
from the GPU. `scripts/gpu_check.sh` runs them on a lent GPU machine."""

from __future__ import annotations

import copy

import pytest
import torch

from gattanet.data.datasets import TensorData
from gattanet.data.loader import Finish, TensorLoader
from gattanet.engine.checkpoint import load_gattanet, save_backbone, save_gattanet
from gattanet.engine.fast_eval import shared_logits
from gattanet.engine.placement import CHANNELS_LAST, place
from gattanet.engine.precision import autocast_dtype
from gattanet.engine.train import TrainConfig, fit
from gattanet.models.attention import GlobalAttention
from gattanet.models.gattanet import GAttANet
from gattanet.models.registry import build_backbone

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (scripts/gpu_check.sh on a GPU machine)")]

CUDA = torch.device("cuda", 0)


def toy_gattanet(dim: int = 16, seed: int = 0) -> GAttANet:
    """The default profile's shapes (toy, 1×32×32, 10 classes) with random α, so attention changes the logits."""
    torch.manual_seed(seed)
    backbone = build_backbone("toy", 10, 1)
    model = GAttANet(backbone, GlobalAttention(backbone.taps(), dim))
    with torch.no_grad():
        model.attention.alpha.copy_(torch.linspace(-1.0, 1.0, len(model.taps)))
    return model.eval()


def toy_data(n: int = 256, seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    return TensorData(torch.randint(0, 256, (n, 1, 32, 32), generator=g, dtype=torch.uint8),
                      torch.randint(0, 10, (n,), generator=g), (0.5,), (0.25,), tuple("0123456789"))


def test_amp_on_this_gpu_is_bf16_or_fp16():
    assert autocast_dtype(CUDA, True) in (torch.bfloat16, torch.float16)
    assert autocast_dtype(CUDA, False) is None


@pytest.mark.parametrize("dim", [16, 64])
def test_shared_evaluation_equals_the_plain_path_on_cuda_in_bf16(dim):
    """The folded shared evaluation against the equations' plain path (`fast` off), both against float64 on
    the CPU: fp32 within 1e-4 of the logits' norm (TF32 may be on), bf16 within 4× the plain path's own error."""
    model = toy_gattanet(dim)
    x = torch.rand(64, 1, 32, 32, generator=torch.Generator().manual_seed(1))

    def plain(m, x):
        m.attention.fast = False
        with torch.no_grad():
            out = m(x)
        m.attention.fast = True
        return out.double().cpu()

    exact = plain(copy.deepcopy(model).double(), x.double())
    gpu = place(model, CUDA)
    xg = x.to(CUDA).contiguous(memory_format=torch.channels_last)
    err = lambda a: ((a.double().cpu() - exact).norm() / exact.norm()).item()
    assert err(shared_logits({"m": gpu}, xg)["m"]) <= 1e-3
    with torch.autocast("cuda", dtype=torch.bfloat16):
        fast, own = err(shared_logits({"m": gpu}, xg)["m"]), err(plain(gpu, xg))
    assert 0 < own < 0.1 and fast <= 4 * own, (fast, own)


def test_placement_is_channels_last_on_the_device():
    model = place(toy_gattanet(), CUDA)
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_cuda for p in model.parameters())
    assert all(p.is_contiguous(memory_format=torch.channels_last) == CHANNELS_LAST for p in convs)


def test_the_loader_keeps_the_data_and_every_batch_on_the_device():
    finish = Finish((0.5,), (0.25,), sigma=0.1, noise_seed=3, device=CUDA, channels_last=True)
    loader = TensorLoader(toy_data(), 64, finish, shuffle=True, seed=1)
    assert loader.images.is_cuda and loader.labels.is_cuda
    for x, y in loader.epoch(0):
        assert x.is_cuda and y.is_cuda and x.is_contiguous(memory_format=torch.channels_last)
    cpu = TensorLoader(toy_data(), 64, Finish((0.5,), (0.25,), sigma=0.1, noise_seed=3, channels_last=True),
                       shuffle=True, seed=1)
    (xg, yg), (xc, yc) = next(iter(loader.epoch(0))), next(iter(cpu.epoch(0)))
    assert torch.equal(yg.cpu(), yc)  # same order: the shuffle is drawn on the CPU for both
    torch.testing.assert_close(xg.cpu(), xc, rtol=0, atol=1e-5)  # same noise, drawn by index


def test_fit_in_bf16_on_cuda_trains_only_the_attention():
    model = place(toy_gattanet(16), CUDA)
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    data = toy_data()
    finish = Finish(data.mean, data.std, device=CUDA, channels_last=CHANNELS_LAST)
    result = fit(model, model.attention_parameters(), TensorLoader(data, 32, finish, shuffle=True),
                 TensorLoader(data, 64, finish), TrainConfig(epochs=2, patience=2, lr=1e-3, l2=1e-5, amp=True),
                 progress=False)
    assert result.precision in ("bf16", "fp16") and len(result.history) >= 1
    assert all(torch.equal(v, frozen[k]) for k, v in model.backbone.state_dict().items())


def test_one_rank_nccl_process_group_around_ddp(tmp_path):
    """NCCL initialises, all-reduces, and a DDP-wrapped GAttANet step gives the plain step's gradients."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    assert dist.is_nccl_available()
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1,
                            device_id=CUDA)
    try:
        t = torch.ones(3, device=CUDA)
        dist.all_reduce(t)
        assert t.tolist() == [1.0, 1.0, 1.0]
        plain = place(toy_gattanet(16), CUDA).train()
        wrapped = DistributedDataParallel(copy.deepcopy(plain), device_ids=[0])
        x = torch.rand(32, 1, 32, 32, device=CUDA)
        y = torch.randint(0, 10, (32,), device=CUDA)
        grads = []
        for m in (plain, wrapped):
            torch.manual_seed(5)  # the same dropout draws in both
            torch.nn.functional.cross_entropy(m(x), y).backward()
            grads.append([p.grad for p in (m.module if m is wrapped else m).attention_parameters()])
        for a, b in zip(*grads, strict=True):
            torch.testing.assert_close(a, b)
    finally:
        dist.destroy_process_group()


def test_checkpoint_round_trip_from_the_gpu(tmp_path):
    """Saved from CUDA, loaded onto CUDA: the same weights, bit for bit, and the same logits (up to the
    kernels a memory format picks)."""
    model = place(toy_gattanet(16, seed=2), CUDA)
    save_backbone(tmp_path / "b.pt", model.backbone, "fashion-mnist", list("0123456789"), {"seed": 2})
    save_gattanet(tmp_path / "g.pt", model, tmp_path / "b.pt")
    loaded, _ = load_gattanet(tmp_path / "g.pt", tmp_path / "b.pt", device=CUDA)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a.cpu(), b.cpu()), k
    x = torch.rand(8, 1, 32, 32, device=CUDA)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), place(loaded, CUDA).eval()(x), rtol=1e-4, atol=1e-4)
