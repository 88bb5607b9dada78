"""A stack of S binary MLPs on 8-bit inputs, the whole forward pass in one compiled CPU call.

For S networks sharing their input (posterior samples, an ensemble) with ``R = S * H`` first
layer units (sample-major: unit ``r`` is unit ``r % H`` of sample ``r // H``), uint8 pixels
``p`` (B, K) and sign words::

    layer 0   y0[m, r]    = float32(p[m] . w0[r]) * pixel_scale[r] + pixel_shift[r]
    layer i   y_i[s, m, n] = float32(sign(y_{i-1}[s, m]) . w_i[s, n]) * scale_i[s, n] + shift_i[s, n]

every hidden ``y`` binarised (bit 1 iff ``y < 0``, :mod:`triton_kernels.pack`), the last one
returned as float32 logits (S, B, N_last): the same two roundings per unit as the epilogue of
:func:`~triton_kernels.xnor_gemm` and :func:`~triton_kernels.pixel_gemm`, so the result equals
:func:`packed_mlp_reference` (those functions' references chained) bit for bit.

The first layer is BinaryNet's bit-plane identity on AND-popcounts. With ``b_j`` the bit planes
of the pixels (``p = sum_j 2^j b_j``) and ``u`` the weight's sign bits (1 iff ``w = -1``)::

    b_j . w = popcount(b_j) - 2 popcount(b_j AND u)        (b_j in {0, 1}, w in {-1, +1})
    p . w   = sum_k p_k - 2 sum_j 2^j popcount(b_j AND u)

exact in integers. The planes' bits beyond ``k`` are 0, so the weights' padding never counts;
words where all eight planes are 0 (blank image borders) are skipped, which changes no sum. Later
layers are XOR-popcounts, ``a . w = k - 2 popcount(a XOR u)``, their padding bits cleared when
the plan is made. Weights are stored transposed, (words, units), so the loop over units
vectorises (``VPOPCNTQ`` on AVX-512, ``CNT`` on NEON, a bit trick elsewhere).

One call runs every layer for a block of rows: no intermediate tensors, no per-layer dispatch
(at batch 1 the dispatch of a dozen torch ops costs as much as the arithmetic). Blocks of rows
go to the threads of :func:`triton_kernels.cpu.thread_pool` when the work repays waking them.

==========================  =============================================  ======================
function                    inputs                                         output
==========================  =============================================  ======================
``make_packed_mlp_plan``     first-layer words (R, KW0), later (S, N, KW)   dict of tensors (plan)
``plan_arrays``              plan, S                                        numpy views (cache them)
``packed_mlp_cpu``           pixels (B, K) uint8, plan_arrays               logits (S, B, N) f32
``packed_mlp_reference``     pixels, the same words and folds              the same, plain torch
==========================  =============================================  ======================
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

import numba
import numpy as np
import torch

from triton_kernels.cpu import thread_count, thread_pool
from triton_kernels.cpu_jit import MIN_WORDS_PER_THREAD, popcount
from triton_kernels.pack import pack_signs_reference
from triton_kernels.pixel_gemm import pixel_gemm_reference
from triton_kernels.xnor_gemm import xnor_gemm_reference

PIXEL_BITS = 8
LAYOUT_FIELDS = 5  # per later layer: k, units, words, weight offset, fold offset

_jit = numba.njit(nogil=True, cache=True, boundscheck=False, fastmath=False)


@_jit
def _pixel_planes(pixels, m, planes):
    """planes[j, w] = bit plane j of row m's pixels, 64 per word (bits beyond k left 0); returns sum_k p_k."""
    planes[:] = 0
    total = np.int64(0)
    for k in range(pixels.shape[1]):
        p = np.uint64(pixels[m, k])
        total += np.int64(p)
        word, bit = k >> 6, np.uint64(k & 63)
        for j in range(PIXEL_BITS):
            planes[j, word] |= ((p >> np.uint64(j)) & np.uint64(1)) << bit
    return total


@_jit
def _first_layer(planes, total, w0t, scale, shift, acc, y):
    """y[r] = float32(p . w0[r]) * scale[r] + shift[r] for every unit r (the module docstring's identity).

    The eight planes of a word sit in registers while the loop over units streams that word of
    every unit: one load, eight AND-popcounts and one accumulator update per unit and word.
    """
    words, units = w0t.shape
    acc = acc[:units]
    acc[:] = 0
    for w in range(words):
        p0, p1, p2, p3 = planes[0, w], planes[1, w], planes[2, w], planes[3, w]
        p4, p5, p6, p7 = planes[4, w], planes[5, w], planes[6, w], planes[7, w]
        if (p0 | p1 | p2 | p3 | p4 | p5 | p6 | p7) == 0:
            continue
        row = w0t[w]
        for r in range(units):
            u = row[r]
            acc[r] += (
                popcount(u & p0)
                + (popcount(u & p1) << np.uint64(1))
                + (popcount(u & p2) << np.uint64(2))
                + (popcount(u & p3) << np.uint64(3))
                + (popcount(u & p4) << np.uint64(4))
                + (popcount(u & p5) << np.uint64(5))
                + (popcount(u & p6) << np.uint64(6))
                + (popcount(u & p7) << np.uint64(7))
            )
    for r in range(units):
        y[r] = np.float32(total - 2 * np.int64(acc[r])) * scale[r] + shift[r]


@_jit
def _pack_row(y, offset, units, out):
    """out[:] = the sign bits of y[offset : offset + units], 64 per word (bit 1 iff y < 0)."""
    out[:] = 0
    for n in range(units):
        if y[offset + n] < 0:
            out[n >> 6] |= np.uint64(1) << np.uint64(n & 63)


@_jit
def _binary_layer(a, wt, k, scale, shift, acc, y):
    """y[n] = float32(k - 2 popcount(a XOR u[n])) * scale[n] + shift[n]; wt (words, units), padding bits 0."""
    words, units = wt.shape
    acc[:units] = 0
    for w in range(words):
        word = a[w]
        for n in range(units):
            acc[n] += popcount(wt[w, n] ^ word)
    for n in range(units):
        y[n] = np.float32(k - 2 * np.int64(acc[n])) * scale[n] + shift[n]


@_jit
def _forward_rows(pixels, m0, m1, w0t, scale0, shift0, weights, scales, shifts, layout, samples, logits):
    """logits[:, m0:m1] of the S networks (module docstring); layout (D - 1, LAYOUT_FIELDS) int64."""
    rows0 = w0t.shape[1]
    width0 = rows0 // samples
    widest = rows0
    widest_words = (width0 + 63) // 64
    for i in range(layout.shape[0]):
        widest = max(widest, layout[i, 1])
        widest_words = max(widest_words, (layout[i, 1] + 63) // 64)
    planes = np.empty((PIXEL_BITS, w0t.shape[0]), dtype=np.uint64)
    acc = np.empty(widest, dtype=np.uint64)
    y0 = np.empty(rows0, dtype=np.float32)
    y = np.empty(widest, dtype=np.float32)
    signs = np.empty((samples, widest_words), dtype=np.uint64)
    depth = layout.shape[0]
    for m in range(m0, m1):
        total = _pixel_planes(pixels, m, planes)
        _first_layer(planes, total, w0t, scale0, shift0, acc, y0)
        for s in range(samples):
            if depth == 0:
                logits[s, m, :] = y0[s * width0 : (s + 1) * width0]
                continue
            _pack_row(y0, s * width0, width0, signs[s])
            for i in range(depth):
                k, units, words, w_off, v_off = layout[i, 0], layout[i, 1], layout[i, 2], layout[i, 3], layout[i, 4]
                wt = weights[w_off + s * words * units : w_off + (s + 1) * words * units].reshape(words, units)
                fold = v_off + s * units
                _binary_layer(signs[s], wt, k, scales[fold : fold + units], shifts[fold : fold + units], acc, y)
                if i == depth - 1:
                    logits[s, m, :] = y[:units]
                else:
                    _pack_row(y, 0, units, signs[s])


def _u64_words(words: torch.Tensor, k: int) -> np.ndarray:
    """(..., KW) int32 sign words -> (..., ceil(k / 64)) uint64 words, the bits beyond k cleared (a copy)."""
    lanes = math.ceil(k / 64)
    padded = torch.zeros(*words.shape[:-1], 2 * lanes, dtype=torch.int32)
    padded[..., : words.shape[-1]] = words.detach().cpu()
    array = padded.numpy().view(np.uint64).copy()
    tail = k % 64
    if tail:
        array[..., -1] &= np.uint64((1 << tail) - 1)
    return array


def _per_sample(vector: torch.Tensor, samples: int, units: int) -> np.ndarray:
    """A fold (units,) shared by the samples or (S, units) -> (S * units,) float32."""
    return vector.detach().cpu().float().expand(samples, units).reshape(-1).numpy().copy()


def make_packed_mlp_plan(
    first_words: torch.Tensor,
    k: int,
    pixel_scale: torch.Tensor,
    pixel_shift: torch.Tensor,
    layers: Sequence[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]],
    samples: int,
) -> dict[str, torch.Tensor]:
    """The compiled forward's operands, made once per network (CPU tensors; register them as buffers).

    Args:
        first_words: (S * H, ceil(k / 32)) int32 sign words of the first layer, sample-major rows.
        k: the number of pixels.
        pixel_scale, pixel_shift: (S * H,) float32, the first layer's epilogue on ``p . w``.
        layers: per later layer ``(words (S, N, KW) int32, k_i, scale, shift)``, the folds
            (N,) shared by the samples or (S, N).
        samples: S.
    """
    units0 = first_words.shape[0]
    if units0 % samples:
        raise ValueError(f"first_words has {units0} rows, not a multiple of samples={samples}")
    weights, scales, shifts, layout = [], [], [], []
    w_off = v_off = 0
    for words, k_i, scale, shift in layers:
        units = words.shape[-2]
        packed = _u64_words(words, k_i).transpose(0, 2, 1).copy()  # (S, words, units)
        layout.append((k_i, units, packed.shape[1], w_off, v_off))
        weights.append(packed.reshape(-1))
        scales.append(_per_sample(scale, samples, units))
        shifts.append(_per_sample(shift, samples, units))
        w_off, v_off = w_off + packed.size, v_off + samples * units
    empty = np.zeros(0, dtype=np.float32)
    return {
        "first_words": torch.from_numpy(_u64_words(first_words, k).T.copy().view(np.int64)),
        "pixel_scale": pixel_scale.detach().cpu().float().contiguous(),
        "pixel_shift": pixel_shift.detach().cpu().float().contiguous(),
        "weights": torch.from_numpy(np.concatenate(weights).view(np.int64) if weights else np.zeros(0, np.int64)),
        "scales": torch.from_numpy(np.concatenate(scales) if scales else empty),
        "shifts": torch.from_numpy(np.concatenate(shifts) if shifts else empty),
        "layout": torch.tensor(layout, dtype=torch.int64).reshape(-1, LAYOUT_FIELDS),
        "k": torch.tensor(k),
    }


class PlanArrays(NamedTuple):
    """A plan's tensors as the numpy arrays the compiled forward takes (views: no copies)."""

    first_words: np.ndarray
    pixel_scale: np.ndarray
    pixel_shift: np.ndarray
    weights: np.ndarray
    scales: np.ndarray
    shifts: np.ndarray
    layout: np.ndarray
    samples: int
    k: int


def plan_arrays(plan: dict[str, torch.Tensor], samples: int) -> PlanArrays:
    """Views of ``plan``'s CPU tensors for :func:`packed_mlp_cpu`; valid while those tensors live (cache them)."""
    return PlanArrays(
        plan["first_words"].numpy().view(np.uint64), plan["pixel_scale"].numpy(), plan["pixel_shift"].numpy(),
        plan["weights"].numpy().view(np.uint64), plan["scales"].numpy(), plan["shifts"].numpy(),
        plan["layout"].numpy(), samples, int(plan["k"]),
    )  # fmt: skip


def packed_mlp_cpu(pixels: torch.Tensor, arrays: PlanArrays, threads: int | None = None) -> torch.Tensor:
    """pixels (B, K) uint8 -> logits (S, B, N_last) float32 of the S networks of a plan (module docstring).

    ``arrays``: :func:`plan_arrays` of a :func:`make_packed_mlp_plan`. ``threads``: at most this
    many (default ``torch.get_num_threads()``); rows split over them only when each share
    outlasts waking a thread.
    """
    if not isinstance(pixels, torch.Tensor) or pixels.dtype != torch.uint8 or pixels.device.type != "cpu":
        raise TypeError(f"pixels must be a uint8 CPU tensor, got {getattr(pixels, 'dtype', type(pixels).__name__)}")
    if pixels.dim() != 2 or pixels.shape[1] != arrays.k:
        raise ValueError(f"pixels must be (batch, k={arrays.k}), got shape {tuple(pixels.shape)}")
    samples, layout = arrays.samples, arrays.layout
    units = int(layout[-1, 1]) if layout.shape[0] else arrays.first_words.shape[1] // samples
    batch = pixels.shape[0]
    logits = np.empty((samples, batch, units), dtype=np.float32)
    x = np.ascontiguousarray(pixels.numpy())
    work = batch * (PIXEL_BITS * arrays.first_words.size + arrays.weights.size)
    workers = 1 if work < 2 * MIN_WORDS_PER_THREAD else max(1, min(threads or thread_count(), batch,
                                                                    work // MIN_WORDS_PER_THREAD))  # fmt: skip
    bounds = [batch * t // workers for t in range(workers + 1)]
    futures = [thread_pool(workers - 1).submit(_forward_rows, x, lo, hi, *arrays[:-1], logits)
               for lo, hi in itertools.pairwise(bounds[1:])]  # fmt: skip
    _forward_rows(x, bounds[0], bounds[1], *arrays[:-1], logits)
    for future in futures:
        future.result()
    return torch.from_numpy(logits)


def packed_mlp_reference(
    pixels: torch.Tensor,
    first_words: torch.Tensor,
    k: int,
    pixel_scale: torch.Tensor,
    pixel_shift: torch.Tensor,
    layers: Sequence[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]],
    samples: int,
) -> torch.Tensor:
    """Plain torch, layer by layer with the kernels' references: the specification of :func:`packed_mlp_cpu`."""
    batch = pixels.shape[0]
    y = pixel_gemm_reference(pixels, first_words, k, scale=pixel_scale, bias=pixel_shift, out_dtype=torch.float32)
    y = y.reshape(batch, samples, -1).transpose(0, 1)  # (S, B, H)
    for words, k_i, scale, shift in layers:
        signs = pack_signs_reference(y)
        y = xnor_gemm_reference(signs, words, k_i, scale=scale, bias=shift, out_dtype=torch.float32)
    return y.contiguous()


def warm_up() -> None:
    """Compile (or load from numba's cache) the forward with a one-layer and a two-layer network."""
    words = torch.zeros(2, 1, dtype=torch.int32)
    ones, zeros = torch.ones(2), torch.zeros(2)
    pixels = torch.zeros(1, 3, dtype=torch.uint8)
    for layers in ([], [(torch.zeros(1, 2, 1, dtype=torch.int32), 2, ones, zeros)]):
        packed_mlp_cpu(pixels, plan_arrays(make_packed_mlp_plan(words, 3, ones, zeros, layers, 1), 1), threads=1)
