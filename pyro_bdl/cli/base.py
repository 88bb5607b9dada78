"""What every ``pyro-bdl`` subcommand shares: the parser class, the error type, the registry entry.

A subcommand is any object (a module, a dataclass) with two attributes:

* ``add_arguments(parser)``: add its flags (or its own sub-subcommands) to an ``argparse`` parser;
* ``run(args) -> int``: do the work and return the exit code; raise :class:`CommandError`,
  ``ValueError`` or ``OSError`` for an expected failure (printed as one line, exit code 2).

:class:`Entry` names it in :data:`pyro_bdl.cli.COMMANDS` by import path, so a command's module
(and torch, pyro, ...) is imported only when that command runs.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from typing import Any, NoReturn

PROG = "pyro-bdl"
EXIT_USAGE = 2
"""Exit code of a usage error or an expected failure (argparse's own convention)."""
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """An expected failure of a command (bad input, missing files); shown as one line, exit code 2."""


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` shows every default and keeps the description's line breaks.

    A help text that states its default itself (``"... (default: $PYRO_BDL_DATA)"``) is kept as it
    is, and a positional argument without a default shows none.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default:" in text or (action.default is None and not action.option_strings):
            return text
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """A parser whose usage errors are one line, ``<prog>: error: <message> (see <prog> --help)``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_parser(subparsers: Any, name: str, help: str, description: str | None = None) -> ArgumentParser:
    """A subcommand parser with this package's formatter; ``description`` defaults to ``help``."""
    return subparsers.add_parser(name, help=help, description=description or help, formatter_class=Formatter)


@dataclass(frozen=True)
class Entry:
    """A registered subcommand: ``name`` on the command line, its one-line ``help``, and ``target``,
    ``"package.module"`` or ``"package.module:attribute"``, the object with ``add_arguments`` and ``run``."""

    name: str
    help: str
    target: str

    def load(self) -> Any:
        module_name, _, attribute = self.target.partition(":")
        loaded: Any = importlib.import_module(module_name)
        return getattr(loaded, attribute) if attribute else loaded
