"""Bernoulli draws on the CPU by a compiled xoshiro256** loop, seeded by one draw of torch's generator.

``bernoulli_bits(p)`` returns bits ``b`` of the shape and dtype of ``p`` (float32 or float64) with
``b = 1`` where ``u < p``, ``u`` uniform on [0, 1): Bernoulli(p) draws. torch's CPU generator
(mt19937, one ``rand_like`` then a compare and a cast) costs about 4-6 ns per element here; the
compiled loop (:mod:`triton_kernels.cpu_bernoulli_jit`: xoshiro256** of Blackman & Vigna 2021,
two 24-bit uniforms per 64-bit output for float32) draws and compares in one pass.

Seeding: each call takes ONE 64-bit draw from torch's default generator (or ``generator``) and
seeds the loop's state from it by splitmix64, so ``torch.manual_seed``, ``torch.get_rng_state`` /
``set_rng_state`` (checkpoints, resumed runs) and forked RNG states govern these draws exactly as
they govern ``torch.rand``; the bits differ from the torch path's (another random stream).

The torch path ``(torch.rand_like(p) < p).to(p.dtype)`` runs instead when the compiled kernels are
switched off (the binary-row kernels' switch: :func:`~triton_kernels.cpu_binary_rows.set_binary_kernels`,
``TRITON_KERNELS_BINARY_ROWS=off``), numba does not import, or ``p`` is not a CPU float32/float64
tensor.
"""

from __future__ import annotations

from functools import cache

import torch

from triton_kernels.cpu_binary_rows import binary_kernels_enabled


@cache
def _jit():
    """The compiled module, or None when numba does not import."""
    try:
        from triton_kernels import cpu_bernoulli_jit
    except ImportError:
        return None
    return cpu_bernoulli_jit


def compiled_bernoulli_enabled(probs: torch.Tensor | None = None) -> bool:
    """Whether :func:`bernoulli_bits` takes the compiled loop (for ``probs`` if given)."""
    if probs is not None and (probs.device.type != "cpu" or probs.dtype not in (torch.float32, torch.float64)):
        return False
    return binary_kernels_enabled() and _jit() is not None


def bernoulli_bits(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Bits ``u < probs`` (shape and dtype of ``probs``, contiguous; no gradient), ``u`` uniform on [0, 1).

    Compiled xoshiro256** seeded by one 64-bit draw of ``generator`` (torch's default if None) where it runs
    (module docstring), else ``(torch.rand_like(probs) < probs)`` with ``generator``."""
    probs = probs.detach()
    if not compiled_bernoulli_enabled(probs):
        if generator is None:
            return (torch.rand_like(probs) < probs).to(probs.dtype)
        return (torch.rand(probs.shape, dtype=probs.dtype, device=probs.device, generator=generator) < probs).to(
            probs.dtype
        )
    seed = int(torch.empty((), dtype=torch.int64).random_(generator=generator))
    out = torch.empty(probs.shape, dtype=probs.dtype)
    if out.numel():
        _jit().bernoulli_fill(probs.contiguous().view(-1).numpy(), seed, out.view(-1).numpy(),
                              probs.dtype == torch.float32)  # fmt: skip
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) the loop for float32 and float64. Does nothing without numba."""
    jit = _jit()
    if jit is None:
        return
    for dtype in (torch.float32, torch.float64):
        jit.bernoulli_fill(torch.full((3,), 0.5, dtype=dtype).numpy(), 1, torch.empty(3, dtype=dtype).numpy(),
                          dtype == torch.float32)  # fmt: skip


__all__ = ["bernoulli_bits", "compiled_bernoulli_enabled", "warm_up"]
