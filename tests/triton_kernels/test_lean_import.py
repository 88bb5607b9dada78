"""Importing triton_kernels is cheap: no pyro, no CUDA context, no cache file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import torch
import triton_kernels
from triton_kernels import pack_signs, unpack_signs, xnor_gemm, tune_xnor_gemm, load_tuning_cache
from triton_kernels import cli, tuning, tuning_cache
heavy = sorted(name for name in sys.modules if name.split(".")[0] in ("pyro", "pyro_bdl", "pyroapi"))
print(json.dumps({
    "heavy": heavy,
    "cuda_initialized": torch.cuda.is_initialized(),
    "cache_object": tuning_cache._default_cache is not None,
    "module": triton_kernels.__file__,
}))
"""


@pytest.mark.parametrize("interpret", ("0", "1"))
def test_import_is_lean(tmp_path, interpret):
    cache = tmp_path / "autotune.json"
    env = {
        **os.environ,
        "TRITON_INTERPRET": interpret,
        "TRITON_KERNELS_AUTOTUNE_CACHE": str(cache),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["module"]).resolve().is_relative_to(REPO)
    assert report["heavy"] == []
    assert report["cuda_initialized"] is False
    assert report["cache_object"] is False
    assert not cache.exists()
