"""Mixed precision: what `amp` means on the CPU, the bf16-flag detection, and a toy GAttANet fit with amp."""

import math

import pytest
import torch

from gattanet.models.attention import GlobalAttention
from gattanet.models.registry import build_backbone
from gattanet.data.datasets import TensorData
from gattanet.data.loader import Finish, TensorLoader
from gattanet.models.gattanet import GAttANet
from gattanet.engine.placement import CHANNELS_LAST, place
from gattanet.engine.precision import autocast, autocast_dtype, cpu_class, cpu_has_native_bf16, precision_name
from gattanet.engine.train import TrainConfig, fit

CPU = torch.device("cpu")


def test_amp_off_is_plain_fp32():
    assert autocast_dtype(CPU, False) is None and precision_name(None) == "fp32"
    with autocast(CPU, None):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16")
def test_amp_on_a_bf16_cpu_is_bf16():
    dtype = autocast_dtype(CPU, True)
    assert dtype == torch.bfloat16 and precision_name(dtype) == "bf16"
    with autocast(CPU, dtype):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_the_avx2_emulation_gives_fp32_and_avx2_kernels():
    """scripts/emulate_avx2.sh (issue 39: what an AVX2-only CPU pays, found on a bigger one): under it the engine
    reads an AVX2 CPU without native bf16, so amp means fp32, and ATen dispatches its AVX2 kernels."""
    import subprocess
    import sys

    from tests.helpers import ROOT

    code = ("import torch; from gattanet.engine.precision import autocast_dtype, cpu_class; "
            "print(cpu_class(), autocast_dtype('cpu', True), torch.backends.cpu.get_cpu_capability())")
    r = subprocess.run([str(ROOT / "scripts" / "emulate_avx2.sh"), sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0 and ("unshare" in r.stderr or "mount" in r.stderr):
        pytest.skip(f"no private mount namespace here: {r.stderr.strip()[-200:]}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["AVX2", "None", "AVX2"]


@pytest.mark.parametrize("flags, native", [("fpu avx512f avx512bw", False), ("fpu avx512f avx512_bf16", True),
                                           ("fpu amx_bf16 amx_tile", True)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert cpu_has_native_bf16.__wrapped__(cpuinfo) is native
    assert cpu_has_native_bf16.__wrapped__(tmp_path / "absent") is False


@pytest.mark.parametrize("flags, cls", [("fpu avx2 fma", "AVX2"), ("fpu avx2 avx512f avx512bw", "AVX-512"),
                                        ("fpu avx2 avx512f avx512_bf16", "AVX512-BF16"), ("fpu sse4_2", "other")])
def test_cpu_class_names_the_widest_vector_unit(tmp_path, flags, cls):
    """What `gattanet-cli plan` and the figures file name: an AVX2-only CPU computes in fp32, ~4x slower here."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert cpu_class(cpuinfo) == cls
    assert cpu_class(tmp_path / "absent") == "other"


def test_fit_of_a_toy_gattanet_with_amp_on_the_cpu():
    torch.manual_seed(0)
    backbone = build_backbone("toy", 10, 1, input_size=8, widths=(4, 8), hidden=16)
    model = place(GAttANet(backbone, GlobalAttention(backbone.taps(), 4)), CPU)
    g = torch.Generator().manual_seed(0)
    data = TensorData(torch.randint(0, 256, (64, 1, 8, 8), generator=g, dtype=torch.uint8),
                      torch.randint(0, 10, (64,), generator=g), (0.5,), (0.25,), tuple("0123456789"))
    finish = Finish(data.mean, data.std, channels_last=CHANNELS_LAST)
    train = TensorLoader(data, 16, finish, shuffle=True)
    val = TensorLoader(data, 32, finish)
    cfg = TrainConfig(epochs=1, patience=1, lr=1e-3, l2=1e-5, amp=True)
    result = fit(model, model.attention_parameters(), train, val, cfg, progress=False)
    assert result.precision == precision_name(autocast_dtype(CPU, True))  # bf16 where native, else fp32
    assert all(math.isfinite(result.history[0][k]) for k in ("train_loss", "val_loss"))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast leaves the weights fp32
