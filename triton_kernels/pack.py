"""Pack the signs of a tensor into 32-bit words along its last dimension, and back.

Bit convention (the same on every backend)::

    word[..., w] bit j (value 1 << j)  <->  element x[..., 32 * w + j]
    bit = 1  iff  x < 0   (the element's sign is -1)
    bit = 0  iff  x >= 0  (sign +1; so sign(0) = sign(-0.0) = +1, as in BinaryNet)

Words are stored as ``torch.int32`` (bit 31 is the int32 sign bit). When K is not a
multiple of 32, :func:`pack_signs` pads the last word with 0 bits.

Tail rule: a consumer told ``k`` reads bits ``0 .. k - 1`` only. The bits of the last word
beyond ``k`` (``~last_word_mask(k)``) are masked off by every backend of every op (the XNOR
GEMM, the pixel GEMM, unpacking, the packed-domain ops), so words whose padding bits are set
(hand-made, or a wider row's words read with a smaller ``k``) give the ``k``-column answer,
the same on the GPU, the CPU path and the reference. Masking costs one AND on the last word.

NaN has no sign: :func:`pack_signs` raises on NaN unless ``check_nan=False``, in which case
NaN packs as +1 (``NaN < 0`` is false). Infinities have a sign and pack normally.

==================  ==================================  =========================
function            input                               output
==================  ==================================  =========================
``pack_signs``      x (..., K) float or signed integer  words (..., ceil(K/32)) int32
``unpack_signs``    words (..., KW) int32, k            (..., k) +-1 in ``dtype``
==================  ==================================  =========================
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from triton_kernels import cpu
from triton_kernels._checks import check_words
from triton_kernels._runtime import resolve_backend

WORD_BITS = 32
SIGNED_DTYPES = (
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
)
UNPACK_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.int32)

# Rows x words per program. Both kernels are bound by memory traffic; these blocks give
# 16-byte-wide accesses and enough programs for any realistic tensor.
_BLOCK_ROWS = 8
_BLOCK_WORDS = 8


def num_words(k: int) -> int:
    """Number of 32-bit words that hold ``k`` signs."""
    return (k + WORD_BITS - 1) // WORD_BITS


def last_word_mask(k: int) -> int:
    """The int32 value whose set bits are the ones of the last word that hold signs (-1: all)."""
    tail = k % WORD_BITS
    return (1 << tail) - 1 if tail else -1


def mask_tail(words: torch.Tensor, k: int) -> torch.Tensor:
    """(..., KW) int32 words with the bits beyond ``k`` cleared (a copy only when one is set)."""
    mask = last_word_mask(k)
    if mask == -1 or words.numel() == 0 or not bool((words[..., -1] & ~mask).any()):
        return words
    words = words.clone()
    words[..., -1] &= mask
    return words


@triton.jit
def _pack_signs_kernel(
    x_ptr,
    out_ptr,
    R,
    K,
    KW,
    stride_xr,
    stride_xk,
    stride_or,
    stride_ow,
    BLOCK_R: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    """x: (R, K) any signed dtype, any strides -> out: (R, KW) int32 sign words."""
    pid_r = tl.program_id(0)
    pid_w = tl.program_id(1)
    offs_r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_k = pid_w * BLOCK_W * 32 + tl.arange(0, BLOCK_W * 32)
    mask = (offs_r[:, None] < R) & (offs_k[None, :] < K)
    x = tl.load(x_ptr + offs_r[:, None] * stride_xr + offs_k[None, :] * stride_xk, mask=mask, other=0)
    if x_ptr.dtype.element_ty == tl.bfloat16:
        # Read the sign from the bits (the interpreter keeps bfloat16 as raw uint16):
        # negative iff the sign bit is set and the value is neither -0.0 nor NaN.
        raw = x.to(tl.int16, bitcast=True)
        magnitude = raw & 0x7FFF
        negative = (raw < 0) & (magnitude != 0) & (magnitude <= 0x7F80)
    else:
        negative = x < 0
    bits = (negative & mask).to(tl.int32) << (offs_k % 32)[None, :]
    words = tl.sum(tl.reshape(bits, (BLOCK_R, BLOCK_W, 32)), axis=2)
    offs_w = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)
    out_mask = (offs_r[:, None] < R) & (offs_w[None, :] < KW)
    tl.store(out_ptr + offs_r[:, None] * stride_or + offs_w[None, :] * stride_ow, words, mask=out_mask)


@triton.jit
def _unpack_signs_kernel(
    w_ptr,
    out_ptr,
    R,
    K,
    K_OUT,
    stride_wr,
    stride_ww,
    stride_or,
    stride_ok,
    BLOCK_R: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    """w: (R, KW) int32 -> out: (R, K_OUT); +-1 for k < K, 0 for K <= k < K_OUT (padding)."""
    pid_r = tl.program_id(0)
    pid_w = tl.program_id(1)
    offs_r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_w = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)
    KW = tl.cdiv(K, 32)
    w_mask = (offs_r[:, None] < R) & (offs_w[None, :] < KW)
    words = tl.load(w_ptr + offs_r[:, None] * stride_wr + offs_w[None, :] * stride_ww, mask=w_mask, other=0)
    # (w << (31 - j)) >> 31 is 0 or -1 (arithmetic shift); OR 1 gives +1 or -1.
    shifts = 31 - tl.arange(0, 32)
    signs = ((words[:, :, None] << shifts[None, None, :]) >> 31) | 1
    signs = tl.reshape(signs, (BLOCK_R, BLOCK_W * 32))
    offs_k = pid_w * BLOCK_W * 32 + tl.arange(0, BLOCK_W * 32)
    signs = tl.where(offs_k[None, :] < K, signs, 0)
    out_mask = (offs_r[:, None] < R) & (offs_k[None, :] < K_OUT)
    out_ptrs = out_ptr + offs_r[:, None] * stride_or + offs_k[None, :] * stride_ok
    if out_ptr.dtype.element_ty == tl.bfloat16:
        signs = signs.to(tl.float32)  # int32 -> bfloat16 goes through float32 (interpreter)
    tl.store(out_ptrs, signs.to(out_ptr.dtype.element_ty), mask=out_mask)


def pack_signs_reference(x: torch.Tensor) -> torch.Tensor:
    """Plain-torch specification of :func:`pack_signs`: (..., K) -> (..., ceil(K/32)) int32."""
    k = x.shape[-1]
    kw = num_words(k)
    bits = (x < 0).to(torch.int64)
    bits = torch.nn.functional.pad(bits, (0, kw * WORD_BITS - k))
    bits = bits.reshape(*x.shape[:-1], kw, WORD_BITS)
    weights = torch.ones(WORD_BITS, dtype=torch.int64, device=x.device) << torch.arange(WORD_BITS, device=x.device)
    words = (bits * weights).sum(dim=-1)
    words = torch.where(words >= 2**31, words - 2**32, words)
    return words.to(torch.int32)


def unpack_signs_reference(words: torch.Tensor, k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Plain-torch specification of :func:`unpack_signs`: (..., KW) int32 -> (..., k) +-1."""
    shifts = torch.arange(WORD_BITS, device=words.device, dtype=torch.int64)
    bits = (words.to(torch.int64)[..., None] >> shifts) & 1
    bits = bits.reshape(*words.shape[:-1], words.shape[-1] * WORD_BITS)[..., :k]
    return (1 - 2 * bits).to(dtype)


def _grid(rows: int, words: int) -> tuple[int, int]:
    return (triton.cdiv(rows, _BLOCK_ROWS), triton.cdiv(words, _BLOCK_WORDS))


def pack_signs_triton(x2d: torch.Tensor) -> torch.Tensor:
    """Launch the packing kernel on a 2-D view (R, K); returns (R, KW) int32."""
    rows, k = x2d.shape
    kw = num_words(k)
    out = torch.empty(rows, kw, dtype=torch.int32, device=x2d.device)
    if rows and kw:
        _pack_signs_kernel[_grid(rows, kw)](
            x2d, out, rows, k, kw, x2d.stride(0), x2d.stride(1), out.stride(0), out.stride(1),
            BLOCK_R=_BLOCK_ROWS, BLOCK_W=_BLOCK_WORDS,
        )  # fmt: skip
    return out


def unpack_signs_triton(words2d: torch.Tensor, k: int, k_out: int, dtype: torch.dtype) -> torch.Tensor:
    """Launch the unpacking kernel: (R, KW) -> (R, k_out), +-1 below k and 0 from k to k_out."""
    rows = words2d.shape[0]
    out = torch.empty(rows, k_out, dtype=dtype, device=words2d.device)
    if rows and k_out:
        _unpack_signs_kernel[_grid(rows, triton.cdiv(k_out, WORD_BITS))](
            words2d, out, rows, k, k_out, words2d.stride(0), words2d.stride(1),
            out.stride(0), out.stride(1), BLOCK_R=_BLOCK_ROWS, BLOCK_W=_BLOCK_WORDS,
        )  # fmt: skip
    return out


@torch.library.custom_op("triton_kernels::pack_signs", mutates_args=())
def _pack_signs_op(x: torch.Tensor, backend: str) -> torch.Tensor:
    lead, k = x.shape[:-1], x.shape[-1]
    x2d = x.reshape(math.prod(lead), k)
    if backend == "triton":
        out = pack_signs_triton(x2d)
    elif backend == "cpu":
        out = cpu.pack_signs_cpu(x2d)
    else:
        out = pack_signs_reference(x2d)
    return out.reshape(*lead, num_words(k))


@_pack_signs_op.register_fake
def _(x: torch.Tensor, backend: str) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], num_words(x.shape[-1]), dtype=torch.int32)


def pack_signs(x: torch.Tensor, *, check_nan: bool = True, backend: str = "auto") -> torch.Tensor:
    """Pack the signs of ``x`` along its last dimension into int32 words.

    Args:
        x: (..., K) floating or signed-integer tensor, any strides.
        check_nan: raise ``ValueError`` if ``x`` holds NaN (costs one reduction and, on
            a GPU, a device sync). With ``False`` NaN packs as +1.
        backend: ``"auto"`` (Triton on CUDA, the fast CPU path on CPU), ``"triton"``,
            ``"cpu"`` or ``"reference"``.

    Returns:
        (..., ceil(K / 32)) int32 words; see the module docstring for the bit layout.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in SIGNED_DTYPES:
        raise TypeError(f"x must have a floating or signed integer dtype {SIGNED_DTYPES}, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension (..., K), got a scalar")
    resolved = resolve_backend(backend, x.device)
    if check_nan and x.is_floating_point() and x.numel() and bool(torch.isnan(x).any()):
        raise ValueError("x contains NaN, which has no sign; clean the input or pass check_nan=False to pack NaN as +1")
    return _pack_signs_op(x, resolved)


@torch.library.custom_op("triton_kernels::unpack_signs", mutates_args=())
def _unpack_signs_op(words: torch.Tensor, k: int, dtype: torch.dtype, backend: str) -> torch.Tensor:
    lead, kw = words.shape[:-1], words.shape[-1]
    words2d = words.reshape(math.prod(lead), kw)
    if backend == "triton":
        out = unpack_signs_triton(words2d, k, k, dtype)
    elif backend == "cpu":
        out = cpu.unpack_signs_cpu(words2d, k, dtype)
    else:
        out = unpack_signs_reference(words2d, k, dtype)
    return out.reshape(*lead, k)


@_unpack_signs_op.register_fake
def _(words: torch.Tensor, k: int, dtype: torch.dtype, backend: str) -> torch.Tensor:
    return words.new_empty(*words.shape[:-1], k, dtype=dtype)


def unpack_signs(
    words: torch.Tensor, k: int, *, dtype: torch.dtype = torch.float32, backend: str = "auto"
) -> torch.Tensor:
    """Unpack int32 sign words back to +-1 values.

    Args:
        words: (..., ceil(k / 32)) int32 words from :func:`pack_signs`.
        k: the number of signs packed in each row (the original last dimension).
        dtype: output dtype, one of float16, bfloat16, float32, float64, int8, int32.
        backend: as for :func:`pack_signs`.

    Returns:
        (..., k) tensor of +1 / -1 in ``dtype``.
    """
    check_words("words", words, k)
    if dtype not in UNPACK_DTYPES:
        raise TypeError(f"dtype must be one of {UNPACK_DTYPES}, got {dtype}")
    return _unpack_signs_op(words, k, dtype, resolve_backend(backend, words.device))
