"""The compiled loop of :mod:`triton_kernels.cpu_bernoulli` (numba; imported on first use only).

xoshiro256** (Blackman & Vigna 2021, "Scrambled linear pseudorandom number generators", ACM TOMS
47(4)), its 256-bit state filled from one 64-bit seed by splitmix64 (Steele, Lea & Flood 2014), as
its authors recommend. Each 64-bit output gives two 24-bit uniforms (bits 63..40 and 39..16;
every bit of xoshiro256** is of full quality, unlike xoshiro256+'s low bits) for float32
probabilities, or one 53-bit uniform (bits 63..11)
for float64, the resolutions of ``torch.rand`` in those dtypes. Element ``i`` (row-major) is::

    out[i] = 1 if u_i < p[i] else 0,      u_i = m_i * 2^-24 (float32) or m_i * 2^-53 (float64)
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(nogil=True, cache=True, boundscheck=False, fastmath=False)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_U5, _U7, _U9 = np.uint64(5), np.uint64(7), np.uint64(9)
_U11, _U16, _U17, _U27 = np.uint64(11), np.uint64(16), np.uint64(17), np.uint64(27)
_U30, _U31, _U40, _U45 = np.uint64(30), np.uint64(31), np.uint64(40), np.uint64(45)
_U19, _U57 = np.uint64(19), np.uint64(57)
_LOW24 = np.uint64((1 << 24) - 1)
_SCALE24 = 2.0**-24
_SCALE53 = 2.0**-53


@_jit
def _splitmix64(state):
    """``(next state, output)`` of splitmix64."""
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> _U30)) * _MIX1
    z = (z ^ (z >> _U27)) * _MIX2
    return state, z ^ (z >> _U31)


@_jit
def _seed_state(seed):
    """xoshiro256**'s four state words from a 64-bit ``seed`` (int64, reinterpreted), by splitmix64."""
    state = np.uint64(seed)
    state, s0 = _splitmix64(state)
    state, s1 = _splitmix64(state)
    state, s2 = _splitmix64(state)
    state, s3 = _splitmix64(state)
    return s0, s1, s2, s3


@_jit
def bernoulli_fill(probs, seed, out, half):
    """``out[i] = (u_i < probs[i])`` for flat ``probs`` and ``out`` (n,) of one float dtype; ``seed`` int64;
    ``half``: two 24-bit uniforms per output (float32), else one 53-bit (float64)."""
    s0, s1, s2, s3 = _seed_state(seed)
    n = probs.shape[0]
    i = 0
    while i < n:
        # xoshiro256**: output rotl(s1 * 5, 7) * 9, then the state's linear step
        x = s1 * _U5
        result = ((x << _U7) | (x >> _U57)) * _U9
        t = s1 << _U17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = (s3 << _U45) | (s3 >> _U19)
        if half:
            out[i] = probs[i] > np.float32((result >> _U40) * _SCALE24)
            if i + 1 < n:
                out[i + 1] = probs[i + 1] > np.float32(((result >> _U16) & _LOW24) * _SCALE24)
            i += 2
        else:
            out[i] = probs[i] > (result >> _U11) * _SCALE53
            i += 1
