"""The ``pyro-bdl`` command line (also ``python -m pyro_bdl.cli``).

=============================================  ==========================================
command                                        what it does
=============================================  ==========================================
``pyro-bdl tour``                              train every model family on the embedded sample; a report
``pyro-bdl data fetch mnist --to DIR``         download MNIST's four IDX files, checked
``pyro-bdl data fetch uci NAME... --to DIR``   download UCI sets with their standard splits
``pyro-bdl data list``                         what can be fetched, with sizes
``pyro-bdl selfcheck | info | tune SHAPE...``  the kernel commands of ``triton-kernels``
``pyro-bdl bench NAME [ARGS...]``              run ``benchmarks/bench_NAME.py`` (source checkout)
``pyro-bdl train MODEL [FLAGS...]``            train a model family (``examples/``; source checkout)
``pyro-bdl evaluate MODEL RUN``                score a finished run from its checkpoint
``pyro-bdl sample MODEL RUN``                  draw digits from a trained generative model
=============================================  ==========================================

Every command has ``--help`` with its defaults. Exit codes: 0 success; 2 a usage error or an
expected failure (a missing file, a failed download), printed as one line
``pyro-bdl <command>: error: ...`` on stderr without a traceback; 130 interrupted; other
non-zero codes are the command's own (``selfcheck`` returns 1 on a mismatch, ``bench`` returns
the benchmark's code).

Adding a command: write a module with ``add_arguments(parser)`` and ``run(args) -> int`` (see
:mod:`pyro_bdl.cli.base`) and add one :class:`~pyro_bdl.cli.base.Entry` to :data:`COMMANDS`.
Only the chosen command's module is imported, so ``pyro-bdl --help`` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pyro_bdl import __version__
from pyro_bdl.cli.base import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PROG,
    ArgumentParser,
    CommandError,
    Entry,
    Formatter,
    add_parser,
)

__all__ = ["COMMANDS", "CommandError", "Entry", "build_parser", "main"]

COMMANDS: tuple[Entry, ...] = (
    Entry("tour", "train every model family on the sample shipped in the package; write a report", "pyro_bdl.cli.tour"),
    Entry("data", "fetch and list the data sets (MNIST, UCI standard splits)", "pyro_bdl.cli.data"),
    Entry(
        "selfcheck", "check every XNOR kernel against its reference on random inputs", "pyro_bdl.cli.kernels:selfcheck"
    ),
    Entry("info", "versions, device, the tuning cache and the CPU GEMM path", "pyro_bdl.cli.kernels:info"),
    Entry("tune", "autotune GEMM shapes now and save the configs (needs a GPU)", "pyro_bdl.cli.kernels:tune"),
    Entry("bench", "run a benchmark of the source checkout: benchmarks/bench_NAME.py", "pyro_bdl.cli.bench"),
    Entry("train", "train a model family (its example script), flags or --config FILE", "pyro_bdl.cli.models:train"),
    Entry("evaluate", "score a finished training run from its checkpoint", "pyro_bdl.cli.models:evaluate"),
    Entry("sample", "draw digits from a trained generative model into a PNG", "pyro_bdl.cli.models:sample"),
)
"""Every subcommand, in the order ``--help`` lists them."""

DESCRIPTION = "pyro-bdl: Bayesian deep learning on Pyro, with binarised layers on XNOR-popcount kernels."


def build_parser(chosen: str | None = None) -> ArgumentParser:
    """The full parser; only ``chosen``'s module is imported to add its arguments (the others show their help line)."""
    parser = ArgumentParser(prog=PROG, description=DESCRIPTION, formatter_class=Formatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for entry in COMMANDS:
        sub = add_parser(subparsers, entry.name, entry.help)
        if entry.name == chosen:
            command = entry.load()
            command.add_arguments(sub)
            sub.set_defaults(_run=command.run)
    return parser


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The first word that is not an option (the top level has no option that takes a value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pyro-bdl`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_chosen_command(argv)).parse_args(argv)
    name = " ".join(part for part in (PROG, args.command, getattr(args, "subcommand", None)) if part)
    try:
        return args._run(args)
    except (CommandError, ValueError, OSError) as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
