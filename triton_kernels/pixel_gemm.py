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

Two methods, both exact, and ``backend`` as for :func:`xnor_gemm` (``"auto"``: ``"triton"``
on CUDA tensors, ``"cpu"`` on CPU tensors; ``"reference"``: plain torch in float64):

``fused``     (Triton only) one kernel: load one weight word and 32 pixels, expand the bits to
              +-1 in registers. At batch 1 this replaces a dozen small launches.
``bitplane``  BinaryNet's first-layer identity, on the XNOR GEMM of the resolved backend
              (the fast CPU path on the CPU): with ``b_j`` the bit planes of the pixels,
              ``p . w = sum_j 2^j (b_j . w)`` and ``b_j . w = ((2 b_j - 1) . w + sum_k w_k) / 2``:
              one ``xnor_gemm`` of 8 M + 1 rows, the extra all-(+1) row giving ``sum_k w_k``.

``method="auto"`` takes ``fused`` on the Triton backend and ``bitplane`` on the CPU path,
the faster one on each (``docs/benchmarks.md``). The bits of ``b`` beyond ``k`` are ignored
(the tail rule of :mod:`triton_kernels.pack`).

==================  ====================================  ==============================
function            inputs                                output
==================  ====================================  ==============================
``pixel_gemm``      pixels (..., K) uint8, words (N, KW)  (..., N) or (..., ceil(N/32))
``pixel_gemm_ref*``  same                                  same, plain torch
==================  ====================================  ==============================
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from triton_kernels import cpu
from triton_kernels._checks import check_choice, check_weight_words
from triton_kernels._runtime import resolve_backend
from triton_kernels.pack import pack_signs, unpack_signs_reference
from triton_kernels.xnor_gemm import (
    _allocate_output,
    _output_kind,
    _store_result,
    apply_epilogue,
    check_epilogue,
    xnor_gemm,
)

METHODS = ("auto", "fused", "bitplane")
PIXEL_BITS = 8

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
    dot = _pixel_products_reference(pixels.reshape(-1, k), b, k)
    out = apply_epilogue(dot, scale, bias, out_dtype, pack_output)
    return out.reshape(*pixels.shape[:-1], out.shape[-1])


def _pixel_products_reference(pixels2d: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """(M, k) uint8, (N, KW) words -> (M, N) int32 exact products."""
    signs = unpack_signs_reference(b, k, dtype=torch.float64)
    return (pixels2d.to(torch.float64) @ signs.T).to(torch.int32)


def _pixel_products_bitplane(pixels2d: torch.Tensor, b: torch.Tensor, k: int, backend: str) -> torch.Tensor:
    """(M, k) uint8, (N, KW) words -> (M, N) int32: 8 bit planes and one all-(+1) row in one XNOR GEMM."""
    m = pixels2d.shape[0]
    shifts = torch.arange(PIXEL_BITS, device=pixels2d.device, dtype=torch.uint8).view(-1, 1, 1)
    planes = ((pixels2d.unsqueeze(0) >> shifts) & 1).reshape(PIXEL_BITS * m, k)  # (8 M, k) in {0, 1}
    signs = torch.cat([planes.to(torch.int8) * 2 - 1, planes.new_ones(1, k, dtype=torch.int8)])  # 2 b - 1
    agreements = xnor_gemm(pack_signs(signs, backend=backend), b, k, backend=backend)  # (8 M + 1, N)
    row_sums = agreements[-1]  # sum_k w_k
    bit_products = ((agreements[:-1] + row_sums) >> 1).view(PIXEL_BITS, m, -1)  # b_j . w: an even sum, halved
    # sum_j 2^j (b_j . w) as eight shifted adds: torch's integer sum over a leading dimension of
    # 8 takes milliseconds on the CPU (measured 16 ms for (8, 1, 4096) int32 on torch 2.13).
    total = bit_products[0].clone()
    for plane in range(1, PIXEL_BITS):
        total += bit_products[plane] << plane
    return total


def _pixel_gemm_triton(pixels2d, b, k, scale, bias, out_dtype, pack_output) -> torch.Tensor:
    m, n = pixels2d.shape[0], b.shape[0]
    out_kind = _output_kind(out_dtype, pack_output, scale is not None or bias is not None)
    out = _allocate_output(m, n, out_kind, out_dtype, b.device)
    if scale is not None:
        scale = scale.to(torch.float32).contiguous()
    if bias is not None:
        bias = bias.to(torch.float32).contiguous()
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


def resolve_method(method: str, backend: str) -> str:
    """The method that runs for a resolved ``backend``; ``ValueError`` for a pairing that cannot run."""
    check_choice("method", method, METHODS)
    if backend == "reference":
        if method != "auto":
            raise ValueError(f"method={method!r} selects an implementation, but the backend is 'reference'")
        return "reference"
    if method == "auto":
        return "fused" if backend == "triton" else "bitplane"
    if method == "fused" and backend != "triton":
        raise ValueError(f"method='fused' is a Triton kernel, but the backend is {backend!r}")
    return method


def pixel_gemm(
    pixels: torch.Tensor,
    b: torch.Tensor,
    k: int,
    *,
    scale: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    pack_output: bool = False,
    method: str = "auto",
    backend: str = "auto",
) -> torch.Tensor:
    """Product of uint8 pixels with packed sign weights: ``sum_k pixels[..., k] * sign(b[n, k])``.

    Args:
        pixels: (..., k) uint8, any strides.
        b: (N, KW) int32 sign words of the weights, KW = ceil(k / 32).
        k: the number of pixels (the reduction length).
        scale, bias, out_dtype, pack_output: the epilogue, as for :func:`xnor_gemm`.
        method: ``"auto"``, ``"fused"`` (the Triton kernel) or ``"bitplane"`` (8 XNOR
            products); see the module docstring.
        backend: as for :func:`xnor_gemm`: ``"auto"`` (Triton on CUDA, the fast CPU path on
            CPU), ``"triton"`` (CPU tensors through ``TRITON_INTERPRET=1``), ``"cpu"`` or
            ``"reference"`` (plain torch, float64).

    Returns:
        (..., N) in ``out_dtype`` (int32 exact products by default), or (..., ceil(N / 32))
        int32 sign words with ``pack_output``.
    """
    if not isinstance(pixels, torch.Tensor) or pixels.dtype != torch.uint8:
        raise TypeError(f"pixels must be uint8 (a tensor), got {getattr(pixels, 'dtype', type(pixels).__name__)}")
    if pixels.dim() < 1 or pixels.shape[-1] != k:
        raise ValueError(f"pixels must be (..., k={k}), got shape {tuple(pixels.shape)}")
    check_weight_words("b", b, k, pixels.device, "pixels")
    out_dtype = check_epilogue(scale, bias, out_dtype, pack_output, b.shape[0], b.device)
    resolved = resolve_backend(backend, pixels.device)
    chosen = resolve_method(method, resolved)
    pixels2d = pixels.reshape(-1, k)
    if chosen == "reference" or pixels2d.shape[0] == 0 or b.shape[0] == 0 or k == 0:
        dot = _pixel_products_reference(pixels2d, b, k)
    elif chosen == "fused":
        out = _pixel_gemm_triton(pixels2d, b, k, scale, bias, out_dtype, pack_output)
        return out.reshape(*pixels.shape[:-1], out.shape[-1])
    else:
        dot = _pixel_products_bitplane(pixels2d, b, k, resolved)
    pack = cpu.pack_signs_cpu if resolved == "cpu" else lambda y: pack_signs(y, check_nan=False, backend=resolved)
    out = apply_epilogue(dot, scale, bias, out_dtype, pack_output, pack)
    return out.reshape(*pixels.shape[:-1], out.shape[-1])
