"""Pre-tune the XNOR GEMM for a list of shapes, filling the persistent tuning cache.

A model's first forward pass otherwise pays for autotuning (compiling and timing each
config). Tuning ahead, e.g. ``triton-kernels tune 1x8192x8192 64x8192x8192``, writes the
winners to the cache file so later processes start with them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from triton_kernels.pack import num_words
from triton_kernels.tuning_cache import default_tuning_cache
from triton_kernels.xnor_gemm import choose_method, xnor_gemm

TUNED_METHODS = ("popcount", "mma", "expand")


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"MxNxK"`` -> (M, N, K), with a clear error for anything else."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError(f"shape must look like MxNxK with positive integers, got {text!r}")
    m, n, k = (int(part) for part in parts)
    return m, n, k


def tune_xnor_gemm(
    shapes: Iterable[tuple[int, int, int]],
    *,
    methods: Iterable[str] | None = None,
    out_dtype: torch.dtype = torch.int32,
    device: str | torch.device = "cuda",
) -> dict[tuple[int, int, int], list[str]]:
    """Autotune the GEMM kernels for each (M, N, K) and persist the best configs.

    Args:
        shapes: problem sizes (batch rows M, outputs N, reduction length K).
        methods: kernels to tune; default: the one ``method="auto"`` picks per shape.
        out_dtype: output dtype to tune for (the config can depend on it).
        device: a CUDA device.

    Returns:
        For each shape, the methods tuned.
    """
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"tuning needs a CUDA device, got {device}")
    if not torch.cuda.is_available():
        raise ValueError(f"tuning needs a CUDA GPU, but torch sees none (device={str(device)!r})")
    chosen = {}
    for m, n, k in shapes:
        tuned = list(methods) if methods is not None else [choose_method(m, n)]
        unknown = [method for method in tuned if method not in TUNED_METHODS]
        if unknown:
            raise ValueError(f"methods must be among {TUNED_METHODS}, got {unknown}")
        words = num_words(k)
        a = torch.randint(-(2**31), 2**31 - 1, (m, words), dtype=torch.int32, device=device)
        b = torch.randint(-(2**31), 2**31 - 1, (n, words), dtype=torch.int32, device=device)
        for method in tuned:
            xnor_gemm(a, b, k, out_dtype=out_dtype, method=method)
        torch.cuda.synchronize(device)
        chosen[(m, n, k)] = tuned
    default_tuning_cache()  # make sure the cache object (and its file path) exists
    return chosen
