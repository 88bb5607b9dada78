"""The one place where pyro_bdl reaches the bit-level kernels.

Layers and exporters call these names only, so the kernel package can change underneath
them. On CUDA tensors they run the Triton kernels; on CPU tensors the fast CPU path (no
Triton needed at run time). See :mod:`triton_kernels` for the bit layout and the options.
"""

from triton_kernels import (
    conv_patch_words,
    conv_weight_words,
    pack_signs,
    pixel_gemm,
    pool_packed_signs,
    unpack_signs,
    xnor_gemm,
)
from triton_kernels.pack import num_words
from triton_kernels.packed_conv import check_conv_input_size, conv_output_size, patch_bits

__all__ = [
    "check_conv_input_size",
    "conv_output_size",
    "conv_patch_words",
    "conv_weight_words",
    "num_words",
    "pack_signs",
    "patch_bits",
    "pixel_gemm",
    "pool_packed_signs",
    "unpack_signs",
    "xnor_gemm",
]
