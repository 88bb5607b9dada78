"""Loading and running the example and benchmark scripts from the tests."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load_script(relative: str) -> ModuleType:
    """Import ``examples/<name>.py`` (or any script path relative to the repository) as a module."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    added = str(path.parent) not in sys.path  # benchmarks import their helpers from beside them
    if added:
        sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        if added:
            sys.path.remove(str(path.parent))
    return module


def load_example(name: str) -> ModuleType:
    return load_script(f"examples/{name}.py")


def run_script(arguments: list[str], cwd: Path, timeout: float = 120, **environment: str):
    """``python <arguments>`` in a subprocess with this checkout first on the path; returns the completed process."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    env.update({"OMP_NUM_THREADS": "1", **environment})
    return subprocess.run(
        [sys.executable, *arguments], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
