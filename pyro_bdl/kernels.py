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
from triton_kernels.cpu import cpu_gemm_path
from triton_kernels.pack import num_words
from triton_kernels.packed_conv import check_conv_input_size, conv_output_size, patch_bits


def make_packed_mlp_plan(*args, **kwargs):
    """:func:`triton_kernels.cpu_mlp.make_packed_mlp_plan` (imported on first use: it needs numba)."""
    from triton_kernels.cpu_mlp import make_packed_mlp_plan as make

    return make(*args, **kwargs)


def plan_arrays(*args, **kwargs):
    """:func:`triton_kernels.cpu_mlp.plan_arrays` (imported on first use: it needs numba)."""
    from triton_kernels.cpu_mlp import plan_arrays as arrays

    return arrays(*args, **kwargs)


def packed_mlp_cpu(*args, **kwargs):
    """:func:`triton_kernels.cpu_mlp.packed_mlp_cpu`: S binary MLPs on uint8 pixels in one compiled CPU call."""
    from triton_kernels.cpu_mlp import packed_mlp_cpu as forward

    return forward(*args, **kwargs)


__all__ = [
    "check_conv_input_size",
    "conv_output_size",
    "conv_patch_words",
    "conv_weight_words",
    "cpu_gemm_path",
    "make_packed_mlp_plan",
    "num_words",
    "pack_signs",
    "packed_mlp_cpu",
    "patch_bits",
    "pixel_gemm",
    "plan_arrays",
    "pool_packed_signs",
    "unpack_signs",
    "xnor_gemm",
]
