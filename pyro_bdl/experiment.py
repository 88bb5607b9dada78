"""What every example and benchmark script shares: flags, environment capture, errors, resume.

* :func:`add_common_arguments` adds ``--data`` (with ``--sample-data``: the MNIST sample inside
  the package), ``--out``, ``--threads``, ``--seed`` and ``--device`` (each one optional) to an
  ``argparse`` parser; :func:`make_parser` builds a parser whose ``--help`` shows every default
  and which reads ``--config FILE`` (JSON or TOML flag values, :mod:`pyro_bdl.config_file`).
* :func:`environment` records where a number was measured: CPU model, core count, threads,
  Python / torch / pyro versions, the GPU if one was used. Every results JSON carries it,
  because timings and even UCI splits differ between machines.
* :func:`run_main` runs a script's ``main``: an expected error (:class:`UsageError`,
  ``ValueError``, ``FileNotFoundError``) becomes one line on stderr and exit code 2, a bug
  keeps its traceback.
* :func:`setup` applies ``--threads``, ``--seed`` and ``--device`` and checks the device.
* :class:`Checkpointer`: the one resume path for loops that do not go through
  :func:`pyro_bdl.inference.fit` (which resumes on its own): model, optimizer, progress and
  every random stream (:func:`pyro_bdl.checkpoint.rng_state`) saved atomically after each
  epoch, so a killed run resumed at the same thread count ends bit-identical.
* :func:`write_results` writes a JSON atomically and prints where it went.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from pyro_bdl.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from pyro_bdl.config_file import ConfigParser
from pyro_bdl.data.mnist import (
    DATA_ENV,
    MNIST,
    MNIST_TRAIN_SIZE,
    binarize_dynamic,
    default_validation_size,
    load_mnist,
    to_float,
    train_validation_split,
)
from triton_kernels.files import atomic_write_text, remove_stale_temporaries

__all__ = [
    "Checkpointer",
    "UsageError",
    "add_common_arguments",
    "add_mnist_split_arguments",
    "arguments_record",
    "check_mnist_split_arguments",
    "cpu_model",
    "data_root",
    "dynamic_binarisation",
    "environment",
    "environment_line",
    "is_full_mnist_protocol",
    "load_binarised_mnist",
    "load_mnist_train_valid",
    "make_parser",
    "require_positive",
    "run_main",
    "score_held_out",
    "setup",
    "write_results",
]

DEVICES = ("cpu", "cuda")
EXPECTED_ERRORS = (ValueError, FileNotFoundError)


class UsageError(Exception):
    """An error of the command line or the environment, reported as one line (exit code 2)."""


def make_parser(description: str | None) -> argparse.ArgumentParser:
    """A parser whose ``--help`` keeps the description's layout and shows every default, with
    ``--config FILE`` (JSON or TOML flag values, overridden by the command line; :mod:`pyro_bdl.config_file`)."""

    class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass

    return ConfigParser(description=description, formatter_class=Formatter)


def add_common_arguments(
    parser: argparse.ArgumentParser,
    *,
    out: str | None = None,
    data: bool = True,
    threads: int | None = 1,
    seed: int | None = 0,
    device: str | None = None,
) -> None:
    """Add the shared flags; pass ``None``/``False`` for one a script does not have.

    Args:
        out: default results folder (``--out``), or None for no such flag.
        data: add ``--data`` (default: ``$PYRO_BDL_DATA``, else ``../shared/data``).
        threads: default of ``--threads`` (torch intra-op threads), or None.
        seed: default of ``--seed``, or None.
        device: default of ``--device {cpu,cuda}``, or None for no such flag.
    """
    if data:
        parser.add_argument(
            "--data",
            type=Path,
            default=None,
            help=f"data folder holding mnist/ and uci/ (default: ${DATA_ENV}, else ../shared/data)",
        )
        parser.add_argument(
            "--sample-data",
            action="store_true",
            help="use the MNIST sample shipped in the package (3,000 training and 1,000 test digits) instead",
        )
    if out is not None:
        parser.add_argument("--out", type=Path, default=Path(out), help="results folder")
    if threads is not None:
        parser.add_argument("--threads", type=int, default=threads, help="torch intra-op threads")
    if seed is not None:
        parser.add_argument("--seed", type=int, default=seed, help="random seed")
    if device is not None:
        parser.add_argument("--device", choices=DEVICES, default=device, help="where to train")


def add_mnist_split_arguments(parser: argparse.ArgumentParser, *, test_limit: bool = True) -> None:
    """``--limit``, ``--validation`` (adapting to ``--limit``) and optionally ``--test-limit``."""
    parser.add_argument("--limit", type=int, default=None, help="use only the first LIMIT training images")
    parser.add_argument(
        "--validation",
        type=int,
        default=None,
        help="last training images held out (default: 10,000 of 60,000, else a sixth of --limit)",
    )
    if test_limit:
        parser.add_argument("--test-limit", type=int, default=None, help="score only the first TEST_LIMIT test images")


def check_mnist_split_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse non-positive ``--limit``/``--test-limit`` and a ``--validation`` that leaves nothing to train on."""
    for name in ("limit", "test_limit"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.validation is not None:
        available = args.limit if args.limit is not None else MNIST_TRAIN_SIZE
        if not 0 <= args.validation < available:
            parser.error(
                f"--validation must lie in [0, {available - 1}] (training images available), got {args.validation}"
            )


def require_positive(parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    """Stop with ``--NAME must be positive, got V`` (argparse's exit code 2) for the first of ``names``
    whose value is set and not > 0 (``None``, an optional flag left unset, passes)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and not value > 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")


def load_mnist_train_valid(args: argparse.Namespace) -> tuple[MNIST, MNIST]:
    """The first ``--limit`` training images cut into train and the last ``--validation`` (or its default)."""
    train_full = load_mnist(data_root(args, "mnist"), "train", limit=args.limit)
    validation = args.validation if args.validation is not None else default_validation_size(len(train_full))
    if not 0 <= validation < len(train_full):
        raise UsageError(f"--validation must lie in [0, {len(train_full) - 1}], got {validation}")
    return train_validation_split(train_full, validation)


def load_binarised_mnist(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """MNIST for a model of binary pixels: ``train`` intensities (n, 784) in [0, 1] (binarised afresh each
    epoch by :func:`dynamic_binarisation`); ``valid`` (when ``--validation`` > 0) and ``test`` binarised once,
    each pixel ~ Bernoulli(intensity) with the seed ``--seed`` + 1; ``test_labels`` (n_test,)."""
    train, valid = load_mnist_train_valid(args)
    test = load_mnist(data_root(args, "mnist"), "test")
    fixed = torch.Generator().manual_seed(args.seed + 1)
    data = {
        "train": to_float(train.images, flatten=True),
        "test": torch.bernoulli(to_float(test.images, flatten=True), generator=fixed),
        "test_labels": test.labels,
    }
    if len(valid):
        data["valid"] = torch.bernoulli(to_float(valid.images, flatten=True), generator=fixed)
    return data


def dynamic_binarisation(batch: torch.Tensor) -> tuple[torch.Tensor]:
    """``fit``'s ``transform_batch``: intensities (B, D) -> a fresh Bernoulli draw of each pixel, as a 1-tuple."""
    return (binarize_dynamic(batch),)


def score_held_out(model: Callable, guide: Callable, images: torch.Tensor, args: argparse.Namespace, *,
                   iw_samples: int | None = None) -> dict[str, Any]:  # fmt: skip
    """:func:`~pyro_bdl.inference.held_out.held_out_scores` of ``images`` (N, D) with the script's
    ``--iw-samples`` (or ``iw_samples``), ``--elbo-samples``, ``--particle-chunk``, ``--data-chunk`` and
    ``--no-progress``."""
    from pyro_bdl.inference.held_out import held_out_scores

    return held_out_scores(model, guide, images, iw_samples=iw_samples or args.iw_samples,
                           elbo_samples=args.elbo_samples, particle_chunk=args.particle_chunk,
                           data_chunk=args.data_chunk, progress=not args.no_progress)  # fmt: skip


def print_history(history: Sequence[dict[str, Any]], label: str = "epoch") -> None:
    """One line per epoch of a :class:`~pyro_bdl.inference.FitState` history: train and validation ELBO, seconds."""
    for entry in history:
        valid = entry.get("validation_elbo")
        valid = "-" if valid is None else f"{valid:.3f}"
        train, seconds = entry["train_elbo"], entry["seconds"]
        print(f"{label} {entry['epoch']:4d}  train ELBO {train:.3f}  validation ELBO {valid}  ({seconds:.0f} s)")


def is_full_mnist_protocol(args: argparse.Namespace) -> bool:
    """Whether the run used all 60,000 training and 10,000 test images (published numbers apply)."""
    return args.limit is None and getattr(args, "test_limit", None) is None


def data_root(args: argparse.Namespace, subfolder: str) -> Path:
    """``<--data>/<subfolder>``, else ``$PYRO_BDL_DATA/<subfolder>``, else ``../shared/data/<subfolder>``.

    ``--data`` may name the data folder (holding ``<subfolder>/``) or the subfolder itself. With
    ``--sample-data`` it is the package's MNIST sample written as IDX files into a temporary folder
    (:func:`pyro_bdl.tour.data.sample_mnist_folder`); only ``mnist`` has one.
    """
    if getattr(args, "sample_data", False):
        if subfolder != "mnist":
            raise UsageError(f"--sample-data: the package holds a sample of MNIST only, this script reads {subfolder}")
        from pyro_bdl.tour.data import sample_mnist_folder

        return sample_mnist_folder()
    given = getattr(args, "data", None)
    if given is not None:
        given = Path(given).expanduser()
        return given / subfolder if (given / subfolder).is_dir() else given
    return Path(os.environ.get(DATA_ENV) or "../shared/data").expanduser() / subfolder


def setup(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads`` and ``--seed``; return the ``--device`` (cpu when absent), checked."""
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be a positive integer, got {threads}")
        torch.set_num_threads(threads)
    seed = getattr(args, "seed", None)
    if seed is not None:
        torch.manual_seed(seed)
    device = torch.device(getattr(args, "device", "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here (torch.cuda.is_available() is False)")
    return device


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else :func:`platform.processor`."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """Where and with what a number was measured, for every results JSON."""
    import pyro

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "device": str(device) if device is not None else "cpu",
    }
    if device is not None and torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def environment_line(info: dict[str, Any]) -> str:
    """One human line of :func:`environment`'s dict, for docs and logs."""
    where = info.get("gpu") or info["cpu"]
    return (
        f"{where}, {info['cpu_count']} cores, {info['torch_threads']} torch thread(s), "
        f"torch {info['torch']}, pyro {info['pyro']}"
    )


def arguments_record(args: argparse.Namespace) -> dict[str, Any]:
    """``vars(args)`` with paths as strings, for a results JSON."""
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}


def write_results(path: str | os.PathLike[str], payload: dict[str, Any], *, quiet: bool = False) -> Path:
    """Write ``payload`` as JSON atomically (folders created, a killed earlier write's temporary removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    atomic_write_text(path, json.dumps(payload, indent=1))
    if not quiet:
        print(f"results written to {path}")
    return path


def run_main(main: Callable[[argparse.Namespace], Any], parse_args: Callable[[Sequence[str] | None], Any]) -> None:
    """``main(parse_args(None))``; expected errors become one stderr line and exit code 2."""
    try:
        main(parse_args(None))
    except (UsageError, *EXPECTED_ERRORS) as error:
        name = Path(sys.argv[0]).name
        print(f"{name}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{Path(sys.argv[0]).name}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


class Checkpointer:
    """Exact resume for a hand-written epoch loop.

    ``state()`` returns what to save besides the random streams (``state_dict``s, epoch,
    history); ``restore(saved)`` puts it back. :meth:`load` restores state and random
    streams if ``path`` exists and returns the saved dict (else None); :meth:`save` writes
    them atomically, removing temporaries a killed earlier write left.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.path, {**state, "rng": rng_state()})

    def load(self, map_location: str | torch.device | None = "cpu") -> dict[str, Any] | None:
        remove_stale_temporaries(self.path)
        if not self.path.is_file():
            return None
        saved = load_checkpoint(self.path, map_location=map_location)
        if "rng" not in saved:
            raise ValueError(f"{self.path} has no random-stream state; it was not written by this version")
        set_rng_state(saved["rng"])
        return saved

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
