"""Mixed precision: which dtype `amp` autocasts to on a device, the context that applies it, its name.

bf16 is used only where the hardware computes it natively: an Ampere-or-later GPU, or a CPU with
AVX512-BF16 or AMX-BF16. Elsewhere bf16 is emulated and slower than fp32, so an older GPU gets fp16
(with a GradScaler, see train.Step) and such a CPU stays in fp32.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # as Linux names them in /proc/cpuinfo


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags as Linux names them in /proc/cpuinfo (empty where it cannot be read)."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return frozenset()
    return frozenset(f for line in lines if line.startswith("flags") for f in line.partition(":")[2].split())


@functools.cache
def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has bf16 instructions, read from the kernel's flags (Linux; False elsewhere).
    torch's own `torch.ops.mkldnn._is_mkldnn_bf16_supported()` is no guide: it is true on any AVX512 CPU."""
    return torch.backends.mkldnn.is_available() and not NATIVE_BF16_CPU_FLAGS.isdisjoint(cpu_flags(cpuinfo))


def cpu_class(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's widest vector class, which sets this project's speed on it: 'AVX512-BF16' (bf16 native),
    'AVX-512', 'AVX2' (fp32 only, about 4x slower per epoch than bf16 here), or 'other'."""
    flags = cpu_flags(cpuinfo)
    if not NATIVE_BF16_CPU_FLAGS.isdisjoint(flags):
        return "AVX512-BF16"
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "other"


def autocast_dtype(device: str | torch.device, amp: bool) -> torch.dtype | None:
    """The dtype `amp` autocasts to on `device`, or None for plain fp32 (amp off, or no native half type)."""
    if not amp:
        return None
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    if kind == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def autocast(device: str | torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """torch.autocast to `dtype` on `device`'s kind, or a no-op context for None (fp32)."""
    return torch.autocast(torch.device(device).type, dtype=dtype) if dtype is not None else nullcontext()


def precision_name(dtype: torch.dtype | None) -> str:
    """"bf16", "fp16" or "fp32" (None): how reports name the precision a run computed in."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", None: "fp32"}[dtype]
