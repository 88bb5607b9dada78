"""8-bit inputs times packed sign weights, in one kernel: the first layer of a binary network.

BinaryNet's first layer multiplies real pixels with binary weights. For 8-bit pixels ``p``
the product with a row of signs ``w`` is an exact integer::

    p . w = sum_k p_k (1 - 2 b_k) = sum_k p_k - 2 sum_{k: b_k = 1} p_k

where ``b_k`` is the weight's sign bit (1 iff ``w_k = -1``, :mod:`triton_kernels.pack`).
:func:`pixel_gemm` computes it from uint8 pixels and the packed weight words, expanding the
bits in registers, and applies the same fused epilogue as :func:`xnor_gemm` (per-output scale
and bias, float output, or output signs packed for the next binary layer). A real input
``x = low + (high - low) p / 255`` folds into that epilogue:
``x . w = (high - low) / 255 * (p . w) + low * sum_k w_k``.

One launch replaces the bit-plane route (8 binary products, then shifts, row sums and the
float glue), which at batch 1 is a dozen small launches.

==================  ====================================  ==============================
function            inputs                                output
==================  ====================================  ==============================
``pixel_gemm``      pixels (..., K) uint8, words (N, KW)  (..., N) or (..., ceil(N/32))
``pixel_gemm_ref``  same                                  same, plain torch
==================  ====================================  ==============================
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from triton_kernels._runtime import resolve_backend
from triton_kernels.pack import _check_words, unpack_signs_reference
from triton_kernels.xnor_gemm import (
    _allocate_output,
    _output_kind,
    _store_result,
    apply_epilogue,
    check_epilogue,
)

# Output units per program and pixel words per step; the kernel is bound by reading the
# weight words, and a (BLOCK_M, 64, 32) expansion stays in registers.
_BLOCK_N = 64
_MAX_BLOCK_M = 4


@triton.jit
def _pixel_gemm_kernel(
    x_ptr,
    b_ptr,
    c_ptr,
    scale_ptr,
    bias_ptr,
    M,
    N,
    K,
    KW,
    stride_xm,
    stride_xk,
    stride_bn,
    stride_bw,
    stride_cm,
    stride_cn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    OUT_KIND: tl.constexpr,
):
    """x: (M, K) uint8, b: (N, KW) int32 sign words -> c: (M, N) or packed (M, ceil(N/32))."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    bit = tl.arange(0, 32)
    dot = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for w in range(0, KW):
        offs_k = w * 32 + bit
        pixels = tl.load(
            x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
            mask=(offs_m[:, None] < M) & (offs_k[None, :] < K),
            other=0,
        ).to(tl.int32)  # (BLOCK_M, 32)
        words = tl.load(b_ptr + offs_n * stride_bn + w * stride_bw, mask=offs_n < N, other=0)  # (BLOCK_N,)
        signs = 1 - 2 * ((words[:, None] >> bit[None, :]) & 1)  # (BLOCK_N, 32) in {-1, +1}
        dot += tl.sum(pixels[:, None, :] * signs[None, :, :], axis=2)
    _store_result(
        dot, pid_n, offs_m, offs_n, M, N, c_ptr, scale_ptr, bias_ptr, stride_cm, stride_cn,
        BLOCK_M, BLOCK_N, HAS_SCALE, HAS_BIAS, OUT_KIND, False,
    )  # fmt: skip


def pixel_gemm_reference(
    pixels: torch.Tensor,
    b: torch.Tensor,
    k: int,
    *,
    scale: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    pack_output: bool = False,
) -> torch.Tensor:
    """Plain torch: ``pixels.int() @ signs(b).T`` (exact; float64 holds every partial sum), then the epilogue."""
    out_dtype = check_epilogue(scale, bias, out_dtype, pack_output, b.shape[0], pixels.device)
    return _pixel_gemm_torch(pixels, b, k, scale, bias, out_dtype, pack_output)


def _pixel_gemm_torch(pixels, b, k, scale, bias, out_dtype, pack_output) -> torch.Tensor:
    """The reference's arithmetic, for arguments already checked."""
    signs = unpack_signs_reference(b, k, dtype=torch.float64)
    dot = (pixels.reshape(-1, k).to(torch.float64) @ signs.T).to(torch.int32)
    out = apply_epilogue(dot, scale, bias, out_dtype, pack_output)
    return out.reshape(*pixels.shape[:-1], out.shape[-1])


def _pixel_gemm_triton(pixels2d, b, k, scale, bias, out_dtype, pack_output) -> torch.Tensor:
    m, n = pixels2d.shape[0], b.shape[0]
    out_kind = _output_kind(out_dtype, pack_output, scale is not None or bias is not None)
    out = _allocate_output(m, n, out_kind, out_dtype, b.device)
    block_m = min(triton.next_power_of_2(max(m, 1)), _MAX_BLOCK_M)
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, _BLOCK_N))
    _pixel_gemm_kernel[grid](
        pixels2d, b, out, scale if scale is not None else out, bias if bias is not None else out,
        m, n, k, b.shape[1],
        pixels2d.stride(0), pixels2d.stride(1), b.stride(0), b.stride(1), out.stride(0), out.stride(1),
        BLOCK_M=block_m, BLOCK_N=_BLOCK_N, HAS_SCALE=scale is not None, HAS_BIAS=bias is not None,
        OUT_KIND=out_kind,
    )  # fmt: skip
    return out


def pixel_gemm(
    pixels: torch.Tensor,
    b: torch.Tensor,
    k: int,
    *,
    scale: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    pack_output: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Product of uint8 pixels with packed sign weights: ``sum_k pixels[..., k] * sign(b[n, k])``.

    Args:
        pixels: (..., k) uint8, any strides.
        b: (N, KW) int32 sign words of the weights, KW = ceil(k / 32).
        k: the number of pixels (the reduction length).
        scale, bias, out_dtype, pack_output: the epilogue, as for :func:`xnor_gemm`.
        backend: ``"auto"`` (Triton on CUDA, plain torch on CPU), ``"triton"`` (CPU tensors
            through ``TRITON_INTERPRET=1``), ``"cpu"`` or ``"reference"`` (both plain torch).

    Returns:
        (..., N) in ``out_dtype`` (int32 exact products by default), or (..., ceil(N / 32))
        int32 sign words with ``pack_output``.
    """
    if pixels.dtype != torch.uint8:
        raise TypeError(f"pixels must be uint8, got {pixels.dtype}")
    if pixels.dim() < 1 or pixels.shape[-1] != k:
        raise ValueError(f"pixels must be (..., k={k}), got shape {tuple(pixels.shape)}")
    _check_words(b, k, "b")
    if b.dim() != 2:
        raise ValueError(f"b must be 2-D (N, words), got shape {tuple(b.shape)}")
    if pixels.device != b.device:
        raise ValueError(f"pixels are on {pixels.device} but b is on {b.device}; move both to one device")
    out_dtype = check_epilogue(scale, bias, out_dtype, pack_output, b.shape[0], b.device)
    if resolve_backend(backend, pixels.device) != "triton" or pixels.numel() == 0 or b.shape[0] == 0:
        return _pixel_gemm_torch(pixels, b, k, scale, bias, out_dtype, pack_output)
    out = _pixel_gemm_triton(pixels.reshape(-1, k), b, k, scale, bias, out_dtype, pack_output)
    return out.reshape(*pixels.shape[:-1], out.shape[-1])
