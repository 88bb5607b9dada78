"""Run the tour: every section of :data:`~pyro_bdl.tour.sections.SECTIONS` on the embedded data, then the report.

python -m pyro_bdl.tour --out tour            # full: a few minutes on 2 CPU cores
python -m pyro_bdl.tour --quick --out tour    # reduced, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pyro_bdl.experiment import environment
from pyro_bdl.tour.core import Budget
from pyro_bdl.tour.data import load_sample
from pyro_bdl.tour.html import REPORT_HTML
from pyro_bdl.tour.report import REPORT_JSON, SectionOutcome, write_report
from pyro_bdl.tour.sections import PENDING, SECTIONS
from pyro_bdl.tour.sections.kernels import kernel_path
from pyro_bdl.validation import check_int

DEFAULT_OUT = "pyro-bdl-tour"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``: the GPU when torch sees one, else the CPU; a CUDA device must exist."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or None, got {str(device)!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: torch sees no CUDA GPU here; use 'cpu'")
    return device


def tour_environment(device: torch.device) -> dict:
    """Versions, machine and which XNOR kernel path runs, for the report."""
    import triton

    info = environment(device)
    info["triton"] = triton.__version__
    info["xnor_kernels"] = kernel_path(device.type)
    info["pyro_models_device"] = "cpu"
    return info


def run_tour(
    out_dir: str | os.PathLike[str],
    *,
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device | None = None,
    sections: Sequence[str] | None = None,
) -> Path:
    """Train every section's models on the embedded data; write ``report.md``, ``report.html`` and ``report.json``.

    Args:
        out_dir: folder for the report and one subfolder of figures per section (created).
        quick: the reduced mode (fewer epochs, samples and test images; still real training).
        seed: seeds every section.
        progress: tqdm bars over the sections and inside them.
        device: where the binary networks and the kernel check run (``None``: the GPU if any).
        sections: keys of :data:`SECTIONS` to run, in the registry's order (``None``: all).

    Returns:
        The path of ``report.md``. A section that raises is reported as failed (with its
        traceback) and the others still run; ``report.json`` lists the errors.
    """
    check_int("seed", seed, -(2**63))
    device = resolve_device(device)
    keys = list(SECTIONS) if sections is None else [key for key in SECTIONS if key in set(sections)]
    unknown = sorted(set(sections or ()) - set(SECTIONS))
    if unknown:
        raise ValueError(f"sections must be among {list(SECTIONS)}, got unknown {unknown}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    budget = Budget(quick=quick, seed=seed, progress=progress, device=device)
    data = load_sample()
    outcomes = []
    started = time.perf_counter()
    bar = tqdm(keys, desc="tour", disable=not progress)
    for key in bar:
        bar.set_postfix_str(key)
        section_start, cpu_start = time.perf_counter(), time.process_time()
        try:
            section = SECTIONS[key](data, out / key, budget)
            outcome = SectionOutcome(key, section, 0.0)
        except Exception as error:  # one broken section must not hide the others' results
            outcome = SectionOutcome(key, None, 0.0, f"{type(error).__name__}: {error}\n{traceback.format_exc()}")
        outcome.seconds = time.perf_counter() - section_start
        outcome.cpu_seconds = time.process_time() - cpu_start
        outcomes.append(outcome)
    info = {
        "tour": {
            "quick": quick,
            "seed": seed,
            "device": str(device),
            "total_seconds": time.perf_counter() - started,
            "total_cpu_seconds": sum(outcome.cpu_seconds for outcome in outcomes),
        },
        "environment": tour_environment(device),
    }
    md_path, _ = write_report(out, outcomes, PENDING if sections is None else {}, info)
    return md_path


def add_tour_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The tour's options, for ``pyro-bdl tour`` (or any parser); returns ``parser``."""
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help="folder for the report and figures")
    parser.add_argument("--quick", action="store_true", help="reduced mode (CI): fewer steps, still real training")
    parser.add_argument("--seed", type=int, default=0, help="seeds every section")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the binary networks and the kernel check run (auto: the GPU if torch sees one)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads; None keeps torch's own")
    parser.add_argument(
        "--sections", nargs="+", choices=list(SECTIONS), default=None, help="run only these sections; None runs all"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def run_from_arguments(args: argparse.Namespace) -> int:
    """Run the tour from parsed :func:`add_tour_arguments` options; print where the report is; 0 if every
    section ran, 1 otherwise."""
    if args.threads is not None:
        check_int("--threads", args.threads)
        torch.set_num_threads(args.threads)
    device = None if args.device == "auto" else args.device
    report = run_tour(
        args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress, device=device,
        sections=args.sections,
    )  # fmt: skip
    sections = json.loads((report.parent / REPORT_JSON).read_text())["sections"]
    failed = [key for key, entry in sections.items() if entry["error"]]
    print(f"report: {report.resolve()}")
    print(f"report as one HTML file: {(report.parent / REPORT_HTML).resolve()}")
    print(f"numbers: {(report.parent / REPORT_JSON).resolve()}")
    if failed:
        print(f"failed sections: {', '.join(failed)} (the report shows their errors)")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pyro_bdl.tour [options]``; exit status 0 when every section ran, 1 if one failed,
    2 for bad options."""
    parser = argparse.ArgumentParser(
        prog="python -m pyro_bdl.tour",
        description="Train small versions of every model family on data shipped in the package; write a report.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    args = add_tour_arguments(parser).parse_args(argv)
    try:  # options argparse cannot check: no GPU for --device cuda, --threads 0
        if args.threads is not None:
            check_int("--threads", args.threads)
        resolve_device(None if args.device == "auto" else args.device)
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    return run_from_arguments(args)
