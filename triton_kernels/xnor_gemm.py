"""XNOR-popcount GEMM on sign words: the binary layer's matrix product.

With ``a`` and ``b`` packed by :func:`triton_kernels.pack_signs` (bit 1 means -1)::

    out[m, n] = sum_k sign(a[m, k]) * sign(b[n, k])
              = K - 2 * sum_w popcount(a_words[m, w] XOR b_words[n, w])

exactly, in int32. Only the first ``K`` bits count: the bits of the last word beyond ``K``
are masked off in every backend, so words with padding bits set (hand-made, or a wider
row's words passed with a smaller ``K``) give the ``K``-column answer (the tail rule of
:mod:`triton_kernels.pack`). An
optional fused epilogue computes ``y = out * scale[n] + bias[n]`` in float32 (a folded
batch norm) and stores ``y`` in a float dtype, or stores ``sign(y)`` already packed along
n (bit 1 iff y < 0) so that the next binary layer reads it directly.

==========  ======================  =======================================
argument    shape                   dtype
==========  ======================  =======================================
a           (..., KW)               int32 sign words, KW = ceil(K / 32)
b           (N, KW)                 int32 sign words (one row per output)
scale/bias  (N,)                    floating (computed in float32)
out         (..., N)                int32, float16, bfloat16 or float32
out packed  (..., ceil(N / 32))     int32 sign words
==========  ======================  =======================================

Three GPU methods, each exact (``method=`` forces one; ``"auto"`` takes ``popcount`` up to
16 rows, else ``expand`` where cuBLASLt allows it, else ``mma``):

``popcount``  XOR + popcount on CUDA cores. Tiles of (BLOCK_M, BLOCK_N) outputs, BLOCK_KW
              words per step, optional split-K with atomics for int32 outputs. Small-batch
              configs (BLOCK_M = batch bucket <= 16) read each weight word once: the
              batch-1 case is bound by the 1-bit weights' bytes.
``mma``       Unpack the words in registers to {0, -1} int8 and multiply on the tensor
              cores with ``tl.dot``; the +-1 product follows from
              ``K - 2 (|a| + |b|) + 4 a.b`` with |.| the rows' popcounts. Variants: one
              reshaped int8 tile per step, or 32 "bit-plane" dots per step; split-K.
``expand``    Unpack both operands to +-1 int8 in device memory (padding -> 0) and call
              ``torch._int_mm`` (cuBLASLt int8), then apply the epilogue. Temporary
              memory: (M + N) * 32 * KW bytes. Fastest at large batch.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from triton_kernels import cpu
from triton_kernels._autotune import launch_tuned, make_config
from triton_kernels._checks import check_channel_vector, check_choice, check_weight_words, check_words
from triton_kernels._runtime import bucket_rows, is_interpreting, popcount32, resolve_backend, use_hardware_popcount
from triton_kernels.pack import (
    last_word_mask,
    num_words,
    pack_signs_reference,
    unpack_signs_reference,
    unpack_signs_triton,
)

OUT_INT32, OUT_FLOAT, OUT_PACKED = 0, 1, 2
OUT_DTYPES = (torch.int32, torch.float16, torch.bfloat16, torch.float32)
METHODS = ("auto", "popcount", "mma", "expand")

# Dispatch rule for method="auto" on the GPU (see docs/benchmarks.md for the measurements).
SMALL_BATCH_MAX_ROWS = 16

_SMALL_BLOCK_ELEMENTS = 16384  # words XORed per step in a small-batch program


def _popcount_configs() -> list[triton.Config]:
    """Small-batch configs (BLOCK_M = 1..16, wide K steps, split-K) and tiled configs."""
    configs = []
    for block_m in (1, 2, 4, 8, 16):
        for block_n in (16, 32, 64):
            for block_kw in (32, 64, 128):
                if block_m * block_n * block_kw > _SMALL_BLOCK_ELEMENTS:
                    continue
                for split_k in (1, 4):
                    kwargs = {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_KW": block_kw, "SPLIT_K": split_k}
                    configs.append(make_config(kwargs, num_warps=4, num_stages=3))
    for block_m, block_n, block_kw, warps, stages in (
        # GEMV-like: one or two rows, whole rows of K per step, few warps per program
        (1, 4, 256, 1, 3),
        (1, 8, 256, 2, 3),
        (1, 8, 128, 1, 3),
        (1, 16, 256, 4, 3),
        (2, 8, 256, 2, 3),
        (2, 4, 256, 1, 3),
        # tiled, for large batches
        (32, 64, 8, 4, 2),
        (64, 64, 4, 4, 2),
        (64, 64, 8, 8, 2),
        (128, 64, 4, 8, 2),
        (64, 128, 4, 8, 2),
        (128, 128, 2, 8, 2),
    ):
        kwargs = {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_KW": block_kw, "SPLIT_K": 1}
        configs.append(make_config(kwargs, num_warps=warps, num_stages=stages))
    return configs


def _prune_popcount_configs(configs, named_args, **kwargs) -> list[triton.Config]:
    args = {**named_args, **kwargs}
    rows, out_kind = args["M_BUCKET"], args["OUT_KIND"]
    kept = []
    for config in configs:
        meta = config.kwargs
        if rows <= 16 and meta["BLOCK_M"] != rows:
            continue
        if rows > 16 and meta["BLOCK_M"] < 32:
            continue
        if meta["SPLIT_K"] > 1 and out_kind != OUT_INT32:
            continue
        if out_kind == OUT_PACKED and meta["BLOCK_N"] % 32:
            continue
        kept.append(config)
    return kept[:1] if is_interpreting() else kept


def _mma_configs() -> list[triton.Config]:
    """Tensor-core configs.

    ``BIT_PLANES=0``: each step unpacks BLOCK_KW words into one int8 tile of BLOCK_KW * 32
    columns (a register reshape). ``BIT_PLANES=1``: each step runs 32 dots, one per bit
    position, on int8 tiles of BLOCK_KW columns unpacked elementwise (no reshape; the
    dot is invariant to this reordering of k). ``SPLIT_K`` > 1 (int32 output only)
    gives small batches enough programs.
    """
    shapes = (  # BLOCK_M, BLOCK_N, BLOCK_KW, BIT_PLANES, SPLIT_K, warps, stages
        (128, 128, 2, 0, 1, 8, 3),
        (128, 128, 4, 0, 1, 8, 3),
        (128, 256, 2, 0, 1, 8, 3),
        (256, 128, 2, 0, 1, 8, 3),
        (64, 128, 4, 0, 1, 4, 3),
        (64, 64, 4, 0, 1, 4, 4),
        (32, 64, 4, 0, 1, 4, 4),
        (128, 128, 32, 1, 1, 8, 3),
        (128, 256, 32, 1, 1, 8, 3),
        (64, 128, 32, 1, 1, 4, 3),
        (64, 64, 32, 1, 4, 4, 3),
        (64, 128, 32, 1, 2, 4, 3),
        (32, 64, 32, 1, 4, 4, 3),
    )
    return [
        make_config(
            {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_KW": bkw, "BIT_PLANES": planes, "SPLIT_K": split_k},
            num_warps=w,
            num_stages=s,
        )
        for bm, bn, bkw, planes, split_k, w, s in shapes
    ]


def _prune_mma_configs(configs, named_args, **kwargs) -> list[triton.Config]:
    args = {**named_args, **kwargs}
    rows, out_kind = args["M_BUCKET"], args["OUT_KIND"]
    kept = [
        config
        for config in configs
        if config.kwargs["BLOCK_M"] <= max(32, rows) and (config.kwargs["SPLIT_K"] == 1 or out_kind == OUT_INT32)
    ]
    return kept[:1] if is_interpreting() else kept


@triton.jit
def _tile_coords(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Grouped tile order: GROUP_M row-tiles share each column tile while it is in L2."""
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    tiles_per_group = GROUP_M * grid_n
    first_m = (pid // tiles_per_group) * GROUP_M
    group_rows = tl.minimum(grid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % tiles_per_group) % group_rows
    pid_n = (pid % tiles_per_group) // group_rows
    return pid_m, pid_n


@triton.jit
def _store_result(
    dot,
    pid_n,
    offs_m,
    offs_n,
    M,
    N,
    c_ptr,
    scale_ptr,
    bias_ptr,
    stride_cm,
    stride_cn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    OUT_KIND: tl.constexpr,
    ATOMIC: tl.constexpr,
):
    """Epilogue shared by every kernel: dot (BLOCK_M, BLOCK_N) int32 -> c."""
    row_ok = offs_m < M
    col_ok = offs_n < N
    if OUT_KIND == 0:
        ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
        mask = row_ok[:, None] & col_ok[None, :]
        if ATOMIC:
            tl.atomic_add(ptrs, dot, mask=mask)
        else:
            tl.store(ptrs, dot, mask=mask)
    else:
        y = dot.to(tl.float32)
        if HAS_SCALE:
            y = y * tl.load(scale_ptr + offs_n, mask=col_ok, other=1.0)[None, :]
        if HAS_BIAS:
            y = y + tl.load(bias_ptr + offs_n, mask=col_ok, other=0.0)[None, :]
        if OUT_KIND == 1:
            ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
            tl.store(ptrs, y.to(c_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])
        else:
            bits = ((y < 0) & col_ok[None, :]).to(tl.int32) << (offs_n % 32)[None, :]
            words = tl.sum(tl.reshape(bits, (BLOCK_M, BLOCK_N // 32, 32)), axis=2)
            offs_w = pid_n * (BLOCK_N // 32) + tl.arange(0, BLOCK_N // 32)
            ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_w[None, :] * stride_cn
            tl.store(ptrs, words, mask=row_ok[:, None] & (offs_w < tl.cdiv(N, 32))[None, :])


@triton.autotune(
    configs=_popcount_configs(),
    key=["M_BUCKET", "N", "KW", "OUT_KIND"],
    prune_configs_by={"early_config_prune": _prune_popcount_configs},
)
@triton.jit
def _xnor_popcount_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    scale_ptr,
    bias_ptr,
    M,
    N,
    K,
    KW,
    LAST_WORD_MASK,
    M_BUCKET,
    stride_am,
    stride_aw,
    stride_bn,
    stride_bw,
    stride_cm,
    stride_cn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_KW: tl.constexpr,
    SPLIT_K: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    OUT_KIND: tl.constexpr,
    USE_HW_POPC: tl.constexpr,
):
    """a: (M, KW), b: (N, KW) int32 words -> c: (M, N) or packed (M, ceil(N/32)).

    Grid: (tiles of (BLOCK_M, BLOCK_N), SPLIT_K). Split k-slices add into a zeroed int32 c.
    """
    pid_m, pid_n = _tile_coords(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, 8)
    pid_k = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_w = tl.arange(0, BLOCK_KW)
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_w[None, :] * stride_aw
    b_ptrs = b_ptr + offs_n[:, None] * stride_bn + offs_w[None, :] * stride_bw
    mismatches = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for w0 in range(pid_k * BLOCK_KW, KW, BLOCK_KW * SPLIT_K):
        w_ok = (w0 + offs_w) < KW
        a = tl.load(a_ptrs + w0 * stride_aw, mask=(offs_m[:, None] < M) & w_ok[None, :], other=0)
        b = tl.load(b_ptrs + w0 * stride_bw, mask=(offs_n[:, None] < N) & w_ok[None, :], other=0)
        keep = tl.where(w0 + offs_w == KW - 1, LAST_WORD_MASK, -1)[None, :]  # tail bits beyond K
        a, b = a & keep, b & keep
        diff = a[:, None, :] ^ b[None, :, :]
        mismatches += tl.sum(popcount32(diff, USE_HW_POPC), axis=2)
    dot = tl.where(pid_k == 0, K, 0) - 2 * mismatches
    _store_result(
        dot, pid_n, offs_m, offs_n, M, N, c_ptr, scale_ptr, bias_ptr, stride_cm, stride_cn,
        BLOCK_M, BLOCK_N, HAS_SCALE, HAS_BIAS, OUT_KIND, SPLIT_K > 1,
    )  # fmt: skip


@triton.autotune(
    configs=_mma_configs(),
    key=["M_BUCKET", "N", "KW", "OUT_KIND"],
    prune_configs_by={"early_config_prune": _prune_mma_configs},
)
@triton.jit
def _xnor_mma_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    scale_ptr,
    bias_ptr,
    M,
    N,
    K,
    KW,
    LAST_WORD_MASK,
    M_BUCKET,
    stride_am,
    stride_aw,
    stride_bn,
    stride_bw,
    stride_cm,
    stride_cn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_KW: tl.constexpr,
    BIT_PLANES: tl.constexpr,
    SPLIT_K: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    OUT_KIND: tl.constexpr,
    USE_HW_POPC: tl.constexpr,
):
    """a: (M, KW), b: (N, KW) int32 words -> c, on the tensor cores.

    Words are unpacked to {0, -1} int8, whose int8 dot is the {0, 1} product a.b; with
    the rows' popcounts |a|, |b| the +-1 product is K - 2 (|a| + |b|) + 4 a.b. Each term
    is a sum over k, so split-K slices add up (the K term on slice 0 only).
    Grid: (tiles of (BLOCK_M, BLOCK_N), SPLIT_K).
    """
    pid_m, pid_n = _tile_coords(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, 8)
    pid_k = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_w = tl.arange(0, BLOCK_KW)
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_w[None, :] * stride_aw
    b_ptrs = b_ptr + offs_n[:, None] * stride_bn + offs_w[None, :] * stride_bw
    shifts = 31 - tl.arange(0, 32)
    both = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    ones_a = tl.zeros((BLOCK_M,), dtype=tl.int32)
    ones_b = tl.zeros((BLOCK_N,), dtype=tl.int32)
    for w0 in range(pid_k * BLOCK_KW, KW, BLOCK_KW * SPLIT_K):
        w_ok = (w0 + offs_w) < KW
        a = tl.load(a_ptrs + w0 * stride_aw, mask=(offs_m[:, None] < M) & w_ok[None, :], other=0)
        b = tl.load(b_ptrs + w0 * stride_bw, mask=(offs_n[:, None] < N) & w_ok[None, :], other=0)
        keep = tl.where(w0 + offs_w == KW - 1, LAST_WORD_MASK, -1)[None, :]  # tail bits beyond K
        a, b = a & keep, b & keep
        ones_a += tl.sum(popcount32(a, USE_HW_POPC), axis=1)
        ones_b += tl.sum(popcount32(b, USE_HW_POPC), axis=1)
        if BIT_PLANES:
            for bit in tl.static_range(32):
                a8 = ((a << (31 - bit)) >> 31).to(tl.int8)
                b8 = ((b << (31 - bit)) >> 31).to(tl.int8)
                both = tl.dot(a8, tl.trans(b8), both, out_dtype=tl.int32)
        else:
            a8 = ((a[:, :, None] << shifts[None, None, :]) >> 31).to(tl.int8)
            b8 = ((b[:, :, None] << shifts[None, None, :]) >> 31).to(tl.int8)
            a8 = tl.reshape(a8, (BLOCK_M, BLOCK_KW * 32))
            b8 = tl.reshape(b8, (BLOCK_N, BLOCK_KW * 32))
            both = tl.dot(a8, tl.trans(b8), both, out_dtype=tl.int32)
    dot = tl.where(pid_k == 0, K, 0) - 2 * (ones_a[:, None] + ones_b[None, :]) + 4 * both
    _store_result(
        dot, pid_n, offs_m, offs_n, M, N, c_ptr, scale_ptr, bias_ptr, stride_cm, stride_cn,
        BLOCK_M, BLOCK_N, HAS_SCALE, HAS_BIAS, OUT_KIND, SPLIT_K > 1,
    )  # fmt: skip


@triton.jit
def _xnor_epilogue_kernel(
    dot_ptr,
    c_ptr,
    scale_ptr,
    bias_ptr,
    M,
    N,
    stride_dm,
    stride_dn,
    stride_cm,
    stride_cn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    OUT_KIND: tl.constexpr,
):
    """dot: (M, N) int32 -> c, the same epilogue the fused kernels apply."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    dot = tl.load(dot_ptr + offs_m[:, None] * stride_dm + offs_n[None, :] * stride_dn, mask=mask, other=0)
    _store_result(
        dot, pid_n, offs_m, offs_n, M, N, c_ptr, scale_ptr, bias_ptr, stride_cm, stride_cn,
        BLOCK_M, BLOCK_N, HAS_SCALE, HAS_BIAS, OUT_KIND, False,
    )  # fmt: skip


def apply_epilogue(
    dot: torch.Tensor,
    scale: torch.Tensor | None,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    pack_output: bool,
    pack=pack_signs_reference,
) -> torch.Tensor:
    """Plain-torch epilogue: dot (..., M, N) int32 -> (..., M, N) out_dtype or packed signs (via ``pack``).

    ``scale``/``bias``: (N,), or (S, N) for a batch of S products (one row per product).
    """
    if scale is None and bias is None and not pack_output:
        return dot if out_dtype == torch.int32 else dot.to(out_dtype)
    y = dot.to(torch.float32)
    if scale is not None:
        y = y * _per_output(scale)
    if bias is not None:
        y = y + _per_output(bias)
    return pack(y) if pack_output else y.to(out_dtype)


def _per_output(vector: torch.Tensor) -> torch.Tensor:
    """(N,) or (S, N) -> float32 broadcastable against (S, M, N)."""
    vector = vector.to(torch.float32)
    return vector.unsqueeze(-2) if vector.dim() == 2 else vector


def default_out_dtype(has_epilogue: bool, pack_output: bool) -> torch.dtype:
    """float32 when scale or bias make real values (and nothing is packed), else int32."""
    return torch.float32 if has_epilogue and not pack_output else torch.int32


def xnor_gemm_reference(
    a: torch.Tensor,
    b: torch.Tensor,
    k: int,
    *,
    scale: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    pack_output: bool = False,
) -> torch.Tensor:
    """Plain-torch specification of :func:`xnor_gemm`: unpack to +-1 and multiply.

    a (M, KW) with b (N, KW), or a batch: a (S, M, KW) with b (S, N, KW).
    """
    if out_dtype is None:
        out_dtype = default_out_dtype(scale is not None or bias is not None, pack_output)
    signs_a = unpack_signs_reference(a, k, torch.float64)
    signs_b = unpack_signs_reference(b, k, torch.float64)
    dot = torch.round(signs_a @ signs_b.transpose(-1, -2)).to(torch.int32)
    return apply_epilogue(dot, scale, bias, out_dtype, pack_output)


def _output_kind(out_dtype: torch.dtype, pack_output: bool, has_epilogue: bool) -> int:
    if pack_output:
        return OUT_PACKED
    return OUT_FLOAT if (out_dtype != torch.int32 or has_epilogue) else OUT_INT32


def _allocate_output(m: int, n: int, out_kind: int, out_dtype: torch.dtype, device) -> torch.Tensor:
    if out_kind == OUT_PACKED:
        return torch.empty(m, num_words(n), dtype=torch.int32, device=device)
    return torch.empty(m, n, dtype=out_dtype, device=device)


def _kernel_args(a, b, out, k, scale, bias, out_kind) -> dict:
    m, n = a.shape[0], b.shape[0]
    return {
        "a_ptr": a, "b_ptr": b, "c_ptr": out,
        "scale_ptr": scale if scale is not None else out,
        "bias_ptr": bias if bias is not None else out,
        "M": m, "N": n, "K": k, "KW": a.shape[1], "LAST_WORD_MASK": last_word_mask(k),
        "M_BUCKET": bucket_rows(m),
        "stride_am": a.stride(0), "stride_aw": a.stride(1),
        "stride_bn": b.stride(0), "stride_bw": b.stride(1),
        "stride_cm": out.stride(0), "stride_cn": out.stride(1),
        "HAS_SCALE": scale is not None, "HAS_BIAS": bias is not None,
        "OUT_KIND": out_kind, "USE_HW_POPC": use_hardware_popcount(),
    }  # fmt: skip


def _shape_key(args: dict, out: torch.Tensor) -> str:
    return f"M{args['M_BUCKET']}-N{args['N']}-KW{args['KW']}-out{args['OUT_KIND']}-{out.dtype}"


def _run_fused(kernel, name, a, b, k, scale, bias, out_kind, out_dtype, config=None) -> torch.Tensor:
    out = _allocate_output(a.shape[0], b.shape[0], out_kind, out_dtype, a.device)
    args = _kernel_args(a, b, out, k, scale, bias, out_kind)

    def grid(meta):
        tiles = triton.cdiv(args["M"], meta["BLOCK_M"]) * triton.cdiv(args["N"], meta["BLOCK_N"])
        return (tiles, meta.get("SPLIT_K", 1))

    launch_tuned(kernel, name, grid, _shape_key(args, out), a.device, args, config)
    return out


def _run_expand(a, b, k, scale, bias, out_kind, out_dtype) -> torch.Tensor:
    padded_k = a.shape[1] * 32
    a8 = unpack_signs_triton(a, k, padded_k, torch.int8)
    b8 = unpack_signs_triton(b, k, padded_k, torch.int8)
    dot = torch._int_mm(a8, b8.t())
    if out_kind == OUT_INT32:
        return dot
    m, n = dot.shape
    out = _allocate_output(m, n, out_kind, out_dtype, a.device)
    block_m, block_n = 32, 128
    _xnor_epilogue_kernel[(triton.cdiv(m, block_m), triton.cdiv(n, block_n))](
        dot, out, scale if scale is not None else out, bias if bias is not None else out, m, n,
        dot.stride(0), dot.stride(1), out.stride(0), out.stride(1),
        BLOCK_M=block_m, BLOCK_N=block_n, HAS_SCALE=scale is not None, HAS_BIAS=bias is not None,
        OUT_KIND=out_kind,
    )  # fmt: skip
    return out


def expand_supported(m: int, n: int) -> bool:
    """Whether ``torch._int_mm`` takes this problem on CUDA (M > 16, N a multiple of 8)."""
    return m > 16 and n % 8 == 0


def choose_method(m: int, n: int) -> str:
    """The GPU method ``method="auto"`` uses for an (m, n) output."""
    if m <= SMALL_BATCH_MAX_ROWS:
        return "popcount"
    return "expand" if expand_supported(m, n) else "mma"


def xnor_gemm_triton(a, b, k, scale, bias, out_dtype, pack_output, method, config=None) -> torch.Tensor:
    """Triton path on 2-D operands a (M, KW), b (N, KW); see :func:`xnor_gemm`."""
    m, n = a.shape[0], b.shape[0]
    out_kind = _output_kind(out_dtype, pack_output, scale is not None or bias is not None)
    if scale is not None:
        scale = scale.to(torch.float32).contiguous()
    if bias is not None:
        bias = bias.to(torch.float32).contiguous()
    if method == "auto":
        method = choose_method(m, n)
    if method == "expand":
        if a.device.type == "cuda" and not expand_supported(m, n):
            raise ValueError(f"method='expand' needs M > 16 and N % 8 == 0 on CUDA, got M={m}, N={n}")
        return _run_expand(a, b, k, scale, bias, out_kind, out_dtype)
    kernel, name = (_xnor_mma_kernel, "xnor_mma") if method == "mma" else (_xnor_popcount_kernel, "xnor_popcount")
    return _run_fused(kernel, name, a, b, k, scale, bias, out_kind, out_dtype, config)


def _batch_row(vector: torch.Tensor | None, s: int) -> torch.Tensor | None:
    """Row ``s`` of a per-batch (S, N) scale or bias; a shared (N,) one as it is."""
    return vector[s] if vector is not None and vector.dim() == 2 else vector


def _stack_products(products: list[torch.Tensor]) -> torch.Tensor:
    """(S, M, N') from S products; one product (an ordinary layer) is viewed, not copied."""
    return products[0].unsqueeze(0) if len(products) == 1 else torch.stack(products)


def xnor_gemm_cpu(a, b, k, scale, bias, out_dtype, pack_output) -> torch.Tensor:
    """CPU path on a (S, M, KW), b (S, N, KW): the compiled kernel with its fused epilogue, else the fallback."""
    if cpu.cpu_gemm_path() == "numba":
        from triton_kernels.cpu_jit import xnor_gemm_jit

        out_kind = _output_kind(out_dtype, pack_output, scale is not None or bias is not None)
        out = xnor_gemm_jit(a, b, k, scale, bias, out_kind)
        return out.to(out_dtype) if out_kind == OUT_FLOAT and out_dtype != torch.float32 else out
    products = [
        apply_epilogue(
            cpu.xnor_gemm_numpy(a[s], b[s], k),
            _batch_row(scale, s), _batch_row(bias, s), out_dtype, pack_output, cpu.pack_signs_cpu,
        )
        for s in range(b.shape[0])
    ]  # fmt: skip
    return _stack_products(products)


def _xnor_gemm_impl(
    a: torch.Tensor,
    b: torch.Tensor,
    k: int,
    scale: torch.Tensor | None,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    pack_output: bool,
    method: str,
    backend: str,
) -> torch.Tensor:
    batched = b.dim() == 3
    b3 = b if batched else b.unsqueeze(0)
    lead, kw, n = a.shape[:-1], a.shape[-1], b3.shape[1]
    a3 = a.reshape(b3.shape[0], math.prod(lead) // b3.shape[0] if b3.shape[0] else 0, kw)
    if backend == "reference" or a3.numel() == 0 or n == 0 or k == 0:
        out = xnor_gemm_reference(a3, b3, k, scale=scale, bias=bias, out_dtype=out_dtype, pack_output=pack_output)
    elif backend == "cpu":
        out = xnor_gemm_cpu(a3, b3, k, scale, bias, out_dtype, pack_output)
    else:  # one launch per product of the batch
        products = []
        for s in range(b3.shape[0]):
            scale_s, bias_s = _batch_row(scale, s), _batch_row(bias, s)
            products.append(xnor_gemm_triton(a3[s], b3[s], k, scale_s, bias_s, out_dtype, pack_output, method))
        out = _stack_products(products)
    return out.reshape(*lead, out.shape[-1])


_xnor_gemm_op = torch.library.custom_op("triton_kernels::xnor_gemm", _xnor_gemm_impl, mutates_args=())
"""The product as a torch operator, so ``torch.compile`` and fake tensors can trace it."""


def _plain_eager_cpu(*tensors: torch.Tensor | None) -> bool:
    """Plain CPU tensors outside any tracing: the implementation can run without the operator's dispatch
    (about 11 us a call, as much as a small product itself costs)."""
    return not torch.compiler.is_compiling() and all(t is None or type(t) is torch.Tensor for t in tensors)


@_xnor_gemm_op.register_fake
def _(a, b, k, scale, bias, out_dtype, pack_output, method, backend):
    n = b.shape[-2]
    if pack_output:
        return a.new_empty(*a.shape[:-1], num_words(n), dtype=torch.int32)
    dtype = torch.float32 if (out_dtype == torch.int32 and (scale is not None or bias is not None)) else out_dtype
    return a.new_empty(*a.shape[:-1], n, dtype=dtype)


def check_epilogue(
    scale: torch.Tensor | None,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype | None,
    pack_output: bool,
    n: int,
    device: torch.device,
    batch: int | None = None,
) -> torch.dtype:
    """Validate the epilogue options of an (M, N) product, or of ``batch`` of them; returns ``out_dtype``."""
    check_channel_vector("scale", scale, n, device, batch)
    check_channel_vector("bias", bias, n, device, batch)
    has_epilogue = scale is not None or bias is not None
    if out_dtype is None:
        out_dtype = default_out_dtype(has_epilogue, pack_output)
    if out_dtype not in OUT_DTYPES:
        raise TypeError(f"out_dtype must be one of {OUT_DTYPES}, got {out_dtype}")
    if pack_output and out_dtype != torch.int32:
        raise ValueError(f"pack_output=True returns int32 sign words; out_dtype={out_dtype} cannot apply")
    if has_epilogue and out_dtype == torch.int32 and not pack_output:
        raise ValueError("scale and bias give real values: choose a floating out_dtype or pack_output=True")
    return out_dtype


def xnor_gemm(
    a: torch.Tensor,
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
    """Binary matrix product from sign words: ``sum_k sign(a[..., k]) * sign(b[n, k])``.

    A stack of S weight matrices ``b`` (S, N, KW) multiplies a batch of activations
    ``a`` (S, ..., KW), product ``s`` with weights ``s``: S networks (an ensemble, posterior
    samples) in one call, ``out[s, ..., n] = sum_k sign(a[s, ..., k]) * sign(b[s, n, k])``.

    Args:
        a: (..., KW) int32 sign words of the activations, KW = ceil(k / 32), any strides;
            (S, ..., KW) when ``b`` is a stack.
        b: (N, KW) int32 sign words of the weights (one row per output), or a stack
            (S, N, KW); any strides.
        k: the number of signs in each row before packing (the reduction length).
        scale: optional (N,) per-output scale, applied in float32; (S, N) for a stack too.
        bias: optional (N,) per-output shift, applied in float32 after ``scale``; (S, N) too.
        out_dtype: int32 (exact counts, the default without scale/bias), float16,
            bfloat16 or float32 (the default with scale or bias).
        pack_output: return the signs of the result packed along N instead,
            (..., ceil(N / 32)) int32, ready to be the ``a`` of the next binary layer.
        method: GPU method, ``"auto"``, ``"popcount"``, ``"mma"`` or ``"expand"``.
        backend: ``"auto"`` (Triton on CUDA, the fast CPU path on CPU), ``"triton"``,
            ``"cpu"`` or ``"reference"``.

    Returns:
        (..., N) in ``out_dtype``, or (..., ceil(N / 32)) int32 words with ``pack_output``.
    """
    check_words("a", a, k)
    check_weight_words("b", b, k, a.device, "a", batched=True)
    batch = b.shape[0] if b.dim() == 3 else None
    if batch is not None and (a.dim() < 2 or a.shape[0] != batch):
        raise ValueError(f"a stack of {batch} weight matrices b needs a as ({batch}, ..., words), got {tuple(a.shape)}")
    out_dtype = check_epilogue(scale, bias, out_dtype, pack_output, b.shape[-2], a.device, batch)
    check_choice("method", method, METHODS)
    resolved = resolve_backend(backend, a.device)
    if method != "auto" and resolved != "triton":
        raise ValueError(f"method={method!r} selects a Triton kernel, but the backend is {resolved!r}")
    product = _xnor_gemm_impl if resolved == "cpu" and _plain_eager_cpu(a, b, scale, bias) else _xnor_gemm_op
    return product(a, b, k, scale, bias, out_dtype, pack_output, method, resolved)
