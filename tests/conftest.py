"""Shared test setup: the Triton interpreter, an isolated tuning cache and device cases.

``TRITON_INTERPRET`` must be set before triton is first imported, so it is set here,
above every other import. A caller can override it: ``TRITON_INTERPRET=0 pytest`` on a
CUDA machine runs the same tests on the GPU (and skips ``backend="triton"`` on CPU
tensors, which needs the interpreter).

Fixtures and parametrization:

* ``device``: ``"cpu"``, plus ``"cuda"`` when a GPU is available.
* ``device, backend``: every applicable (device, backend) pair for ``backend`` in
  ``reference``, ``cpu``, ``triton``. ``cpu`` cases run twice: on the compiled GEMM
  (id ``cpu``) and on the numpy fallback (id ``cpu-numpy``), through ``TRITON_KERNELS_CPU_GEMM``.
* ``device, backend, method``: as above, with each Triton method (``popcount``, ``mma``,
  ``expand``) for the Triton backend and ``"auto"`` for the others.

A test that parametrizes ``device`` itself is left alone.

Data sets: ``mnist_root`` and ``uci_root`` give the real data folders
(``$PYRO_BDL_DATA/<name>``, else ``shared/data/<name>`` beside the repository). Where they are
missing a test skips, saying where it looked; under ``CI=true`` it fails instead, so a CI run
without the data cannot pass on silent skips. Use these fixtures (or :func:`data_folder`)
rather than a per-file check.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path

import pytest
import torch

from triton_kernels import tuning_cache
from triton_kernels._runtime import is_interpreting

DATA_ENV = "PYRO_BDL_DATA"
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MNIST_MARKER = "train-images-idx3-ubyte.gz"
UCI_MARKER = "yacht/data.txt"
BACKENDS = ("reference", "cpu", "triton")
CPU_GEMM_PATHS = ("numba", "numpy")  # backend="cpu" runs once on each: the compiled GEMM, the fallback
TRITON_METHODS = ("popcount", "mma", "expand")
NEEDS_INTERPRETER = "backend='triton' on CPU tensors needs TRITON_INTERPRET=1"


def in_ci() -> bool:
    """Whether the ``CI`` environment variable says this is a CI run (``true``/``1``/``yes``)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def data_folder(name: str, marker: str) -> Path:
    """``<data>/<name>`` if it holds ``marker``; else skip the test, or fail it under ``CI=true``."""
    root = Path(os.environ.get(DATA_ENV) or DEFAULT_DATA).expanduser() / name
    if not (root / marker).exists():
        message = f"{name} data not found: no {root / marker} (set {DATA_ENV} to the folder holding {name}/)"
        if in_ci():
            pytest.fail(f"CI=true but {message}", pytrace=False)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The real MNIST folder (skips without it; fails under ``CI=true``)."""
    return data_folder("mnist", MNIST_MARKER)


@pytest.fixture(scope="session")
def uci_root() -> Path:
    """The real UCI folder, one sub-folder per data set (skips without it; fails under ``CI=true``)."""
    return data_folder("uci", UCI_MARKER)


def available_devices() -> list[str]:
    """``["cpu"]``, plus ``"cuda"`` when torch sees a GPU."""
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def triton_runs_on(device: str) -> bool:
    """Whether Triton kernels can run on tensors of ``device`` in this process."""
    return device == "cuda" or is_interpreting()


def skip_unless_triton_runs_on(device: str) -> None:
    if not triton_runs_on(device):
        pytest.skip(NEEDS_INTERPRETER)


def _engine_params(with_method: bool) -> list:
    params = []
    for device in available_devices():
        for backend in BACKENDS:
            if backend == "cpu" and device != "cpu":
                continue
            methods = TRITON_METHODS if with_method and backend == "triton" else ("auto",)
            marks = []
            if backend == "triton" and not triton_runs_on(device):
                marks.append(pytest.mark.skip(reason=NEEDS_INTERPRETER))
            cpu_paths = CPU_GEMM_PATHS if backend == "cpu" else (None,)
            for method in methods:
                for cpu_path in cpu_paths:
                    values = (device, backend, method) if with_method else (device, backend)
                    case_id = "-".join(value for value in values if value != "auto")
                    path_marks = marks
                    if cpu_path is not None:
                        path_marks = [*marks, pytest.mark.cpu_gemm_path(cpu_path)]
                        case_id += "" if cpu_path == "numba" else f"-{cpu_path}"
                    params.append(pytest.param(*values, id=case_id, marks=path_marks))
    return params


def _parametrizes(metafunc, name: str) -> bool:
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0]
        names = [part.strip() for part in names.split(",")] if isinstance(names, str) else list(names)
        if name in names:
            return True
    return False


def pytest_generate_tests(metafunc):
    names = metafunc.fixturenames
    if "device" not in names or _parametrizes(metafunc, "device"):
        return
    if "backend" in names and "method" in names:
        metafunc.parametrize(("device", "backend", "method"), _engine_params(with_method=True))
    elif "backend" in names:
        metafunc.parametrize(("device", "backend"), _engine_params(with_method=False))
    else:
        metafunc.parametrize("device", available_devices())


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "cpu_gemm_path(path): run with TRITON_KERNELS_CPU_GEMM=path ('numba' or 'numpy')",
    )
    config.addinivalue_line(
        "markers",
        "full_autotune: on a GPU, let the autotuner time every pruned config instead of the first",
    )


@pytest.fixture(autouse=True)
def chosen_cpu_gemm_path(request, monkeypatch):
    """Apply a test's ``cpu_gemm_path`` mark (backend="cpu" cases run on both CPU GEMM paths)."""
    mark = request.node.get_closest_marker("cpu_gemm_path")
    if mark is not None:
        monkeypatch.setenv("TRITON_KERNELS_CPU_GEMM", mark.args[0])


@pytest.fixture(autouse=True)
def isolated_tuning_cache(tmp_path, monkeypatch):
    """Point the persistent autotune cache at a fresh file, never at ~/.cache."""
    path = tmp_path / "autotune" / "autotune.json"
    monkeypatch.setenv(tuning_cache.CACHE_ENV, str(path))
    monkeypatch.setattr(tuning_cache, "_default_cache", None)
    return path


@pytest.fixture(autouse=True)
def first_config_autotune(request, monkeypatch):
    """On a GPU, autotune like the interpreter does: run the first pruned config only.

    Timing every config for every shape of the suite would take many minutes; each
    config is covered explicitly in test_xnor_gemm.py, and tests marked ``full_autotune``
    keep the real pruner.
    """
    if is_interpreting() or request.node.get_closest_marker("full_autotune"):
        return
    from triton_kernels.xnor_gemm import _xnor_mma_kernel, _xnor_popcount_kernel

    for kernel in (_xnor_popcount_kernel, _xnor_mma_kernel):
        prune = kernel.early_config_prune

        def first_only(configs, named_args, _prune=prune, **kwargs):
            return _prune(configs, named_args, **kwargs)[:1]

        monkeypatch.setattr(kernel, "early_config_prune", first_only)
