"""Triton kernels for binary networks: sign packing, the XNOR-popcount GEMM, the 8-bit first layer
and the packed-domain convolution ops (patch words, pooling on bits).

Depends on torch and triton only (numpy and numba for the CPU path); importing it starts no CUDA
context and compiles nothing. See ``docs/kernels.md``.
"""

from triton_kernels.pack import pack_signs, pack_signs_reference, unpack_signs, unpack_signs_reference
from triton_kernels.packed_conv import (
    conv_patch_words,
    conv_patch_words_reference,
    conv_weight_words,
    pool_packed_signs,
    pool_packed_signs_reference,
)
from triton_kernels.pixel_gemm import pixel_gemm, pixel_gemm_reference
from triton_kernels.tuning import tune_xnor_gemm
from triton_kernels.tuning_cache import default_cache_path, load_tuning_cache
from triton_kernels.xnor_gemm import xnor_gemm, xnor_gemm_reference

__all__ = [
    "conv_patch_words",
    "conv_patch_words_reference",
    "conv_weight_words",
    "default_cache_path",
    "load_tuning_cache",
    "pack_signs",
    "pack_signs_reference",
    "pixel_gemm",
    "pixel_gemm_reference",
    "pool_packed_signs",
    "pool_packed_signs_reference",
    "tune_xnor_gemm",
    "unpack_signs",
    "unpack_signs_reference",
    "xnor_gemm",
    "xnor_gemm_reference",
]
