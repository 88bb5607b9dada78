"""Shared runtime helpers: backend selection, interpreter detection and the popcount.

Nothing here touches CUDA at import time: every query runs when a launcher calls it.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from triton_kernels._checks import check_choice

Backend = Literal["auto", "triton", "cpu", "reference"]
BACKENDS: tuple[str, ...] = ("auto", "triton", "cpu", "reference")

_TRUTHY = {"1", "true", "on", "yes"}


def is_interpreting() -> bool:
    """Whether Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUTHY


def resolve_backend(backend: str, device: torch.device) -> str:
    """Map a user's ``backend`` choice to ``"triton"``, ``"cpu"`` or ``"reference"``.

    ``"auto"`` picks the Triton kernels for CUDA tensors and the fast CPU path for CPU
    tensors. ``"triton"`` on CPU tensors needs the interpreter (``TRITON_INTERPRET=1``).
    """
    check_choice("backend", backend, BACKENDS)
    if backend == "auto":
        return "triton" if device.type == "cuda" else "cpu"
    if backend == "triton" and device.type != "cuda" and not is_interpreting():
        raise ValueError(
            f"backend='triton' needs CUDA tensors (got device {device}); set "
            "TRITON_INTERPRET=1 before importing triton to run the kernels on the CPU"
        )
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"backend='cpu' needs CPU tensors, got device {device}")
    return backend


def use_hardware_popcount() -> bool:
    """True on a GPU; the interpreter has no libdevice, so it uses the bit-trick popcount."""
    return not is_interpreting()


def bucket_rows(m: int) -> int:
    """Bucket a batch size for autotune keys: the next power of two, at most 8192."""
    return min(triton.next_power_of_2(max(m, 1)), 8192)


def device_label(device: torch.device) -> str:
    """Name of the device kernels run on, used to key tuned configs."""
    if is_interpreting():
        return "triton-interpreter"
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


@triton.jit
def _popcount_swar(x):
    """Bit-trick (SWAR) popcount of int32 words; runs under the interpreter."""
    u = x.to(tl.uint32, bitcast=True)
    u = u - ((u >> 1) & 0x55555555)
    u = (u & 0x33333333) + ((u >> 2) & 0x33333333)
    u = (u + (u >> 4)) & 0x0F0F0F0F
    u = (u * 0x01010101) >> 24
    return u.to(tl.int32, bitcast=True)


@triton.jit
def popcount32(x, USE_HW_POPC: tl.constexpr):
    """Number of set bits in each int32 word of ``x`` (same shape, int32)."""
    if USE_HW_POPC:  # noqa: SIM108 - a constexpr branch: only one side is compiled
        count = libdevice.popc(x)
    else:
        count = _popcount_swar(x)
    return count
