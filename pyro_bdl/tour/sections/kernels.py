"""Tour section: the XNOR-popcount kernels' self-check (``triton-kernels selfcheck``) on the tour's device."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from pyro_bdl.tour.core import Budget, Section
from pyro_bdl.tour.data import TourData
from triton_kernels._runtime import is_interpreting
from triton_kernels.cli import selfcheck
from triton_kernels.cpu import describe_cpu_gemm


def kernel_path(device_type: str) -> str:
    """One line naming the XNOR GEMM that runs on ``device_type`` ("cuda" or "cpu")."""
    if device_type == "cuda":
        return "Triton kernels on the GPU"
    return f"CPU GEMM: {describe_cpu_gemm()}"


def run(data: TourData, out: Path, budget: Budget) -> Section:
    del data, out  # the self-check draws its own random operands
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        ok = selfcheck(budget.device, seed=budget.seed)
    table = printed.getvalue().strip()
    if budget.device.type == "cuda":
        triton, where = "ran on the GPU", "The Triton kernels ran on the GPU."
    elif is_interpreting():
        triton = "ran in Triton's CPU interpreter (TRITON_INTERPRET=1)"
        where = "No GPU here: the compiled CPU GEMM ran, and the Triton kernels ran in Triton's CPU interpreter."
    else:
        triton = "not run (no GPU)"
        where = "No GPU here: the compiled CPU GEMM ran (the Triton kernels need a CUDA GPU)."
    numbers = {
        "all_exact": bool(ok),
        "device": str(budget.device),
        "triton_kernels": triton,
        "triton_kernels_ran_on_gpu": budget.device.type == "cuda",
        "kernel_path": kernel_path(budget.device.type),
    }
    text = (
        "`triton_kernels.cli.selfcheck` (what `triton-kernels selfcheck` runs) compares sign packing, every XNOR "
        f"GEMM variant and the pixel GEMM with the reference on random operands, bit for bit. {where}\n\n"
        f"```text\n{table}\n```"
    )
    return Section("Kernel self-check", numbers, [], text)
