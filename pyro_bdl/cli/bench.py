"""``pyro-bdl bench NAME [ARGS...]``: run ``benchmarks/bench_NAME.py ARGS...`` of the source checkout.

The benchmarks are scripts beside the package in the repository, not part of an installed
package, so this works only where ``pyro_bdl`` is imported from a checkout (an editable install
or ``PYTHONPATH``); elsewhere it is a one-line error. ARGS go to the script unchanged
(``pyro-bdl bench xnor_gemm --help`` shows the benchmark's own flags), and the exit code is the
script's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pyro_bdl
from pyro_bdl.cli.base import CommandError


def source_checkout() -> Path | None:
    """The repository root holding the imported ``pyro_bdl`` and a ``benchmarks/`` folder, else None."""
    root = Path(pyro_bdl.__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "benchmarks").is_dir() else None


def available(root: Path) -> list[str]:
    """NAME for every ``benchmarks/bench_NAME.py`` of the checkout, sorted."""
    return sorted(path.stem.removeprefix("bench_") for path in (root / "benchmarks").glob("bench_*.py"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    root = source_checkout()
    parser.epilog = (
        f"benchmarks in {root}: {', '.join(available(root))}" if root else "no source checkout here: no benchmarks"
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="the benchmark: benchmarks/bench_NAME.py")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, metavar="ARGS", help="passed to the script as they are")


def run(args: argparse.Namespace) -> int:
    root = source_checkout()
    if root is None:
        raise CommandError(
            f"benchmarks live in the source checkout, and pyro_bdl was imported from {Path(pyro_bdl.__file__).parent}; "
            "clone the repository, `pip install -e .` there and run pyro-bdl bench from it"
        )
    names = available(root)
    if args.name is None:
        raise CommandError(f"NAME is required, one of {names}")
    if args.name not in names:
        raise CommandError(f"unknown benchmark {args.name!r}; {root / 'benchmarks'} has {names}")
    script = root / "benchmarks" / f"bench_{args.name}.py"
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, str(script), *args.arguments], env={**os.environ, "PYTHONPATH": path})
    return done.returncode
