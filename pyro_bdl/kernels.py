"""The one place where pyro_bdl reaches the bit-level kernels.

Layers call these names only, so the kernel package can change underneath them. On CUDA
tensors they run the Triton kernels; on CPU tensors the fast CPU path (no Triton needed
at run time). See :mod:`triton_kernels` for the bit layout and the options.
"""

from triton_kernels import pack_signs, pixel_gemm, unpack_signs, xnor_gemm
from triton_kernels.pack import num_words

__all__ = ["num_words", "pack_signs", "pixel_gemm", "unpack_signs", "xnor_gemm"]
