"""``--config FILE``: a JSON or TOML file of flag values for an example script (and ``pyro-bdl train``).

The file is one table (a JSON object, a TOML document) whose keys are the script's flags, with
``-`` or ``_`` (``batch-size`` or ``batch_size``), and whose values are what the flag takes:
a number, a string, ``true``/``false`` for an on/off flag, a list for a flag that takes several
values (or a repeatable one: ``hidden-dims = [[200, 200], [100, 100]]``; a list inside is written
comma-separated, ``100,50``). ``null`` (JSON) leaves the default. Flags given on the command line
override the file::

    # run.toml
    epochs = 3
    latent-dims = [100, 50]
    no-figures = true

    python examples/dlgm_mnist.py --config run.toml --epochs 5      # 5 epochs, the rest from the file

The file is turned into the same flags and parsed by the script's own parser, so every type,
choice and range check applies to it; an unknown key is a one-line error naming the known ones.
:class:`ConfigParser` is the ``argparse`` parser that does this (``experiment.make_parser``
returns one); :func:`program_name` sets the name its usage and errors show (``pyro-bdl train dlgm``).
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import json
import sys
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

CONFIG_FLAG = "--config"
_PROG: contextvars.ContextVar[str | None] = contextvars.ContextVar("pyro_bdl_prog", default=None)
_LENIENT: contextvars.ContextVar[bool] = contextvars.ContextVar("pyro_bdl_config_lenient", default=False)


@contextlib.contextmanager
def program_name(prog: str, *, ignore_unknown_keys: bool = False) -> Iterator[None]:
    """Parsers made by :func:`pyro_bdl.experiment.make_parser` inside this block show ``prog`` as their name;
    with ``ignore_unknown_keys`` a config key the parser lacks is skipped, not an error (for the settings a
    finished run recorded, which may hold values the script derived after parsing)."""
    tokens = _PROG.set(prog), _LENIENT.set(ignore_unknown_keys)
    try:
        yield
    finally:
        _PROG.reset(tokens[0])
        _LENIENT.reset(tokens[1])


def current_program_name() -> str | None:
    return _PROG.get()


def read_config(path: str | Path) -> dict[str, Any]:
    """The table in a ``.json`` or ``.toml`` file (by suffix), keys with ``-`` turned into ``_``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: another suffix, a syntax error, or not a table at the top.
    """
    path = Path(path)
    if path.suffix not in (".json", ".toml"):
        raise ValueError(f"{CONFIG_FLAG} must name a .json or .toml file, got {str(path)!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{CONFIG_FLAG} {path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        table = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"{CONFIG_FLAG} {path}: not valid {path.suffix[1:].upper()}: {error}") from None
    if not isinstance(table, dict):
        raise ValueError(f"{CONFIG_FLAG} {path}: expected a table of flag = value, got a {type(table).__name__}")
    return {str(key).replace("-", "_"): value for key, value in table.items()}


def _word(value: Any) -> str:
    """One command-line word: a list inside a list is written comma-separated."""
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


def config_words(
    parser: argparse.ArgumentParser, config: dict[str, Any], given: Sequence[str], source: str
) -> list[str]:
    """``config`` as command-line words for ``parser``, skipping repeatable flags the command line gives itself.

    A key is a flag's name (``no-progress``) or its destination (``progress``, as a results JSON records it);
    an on/off flag named by its flag is given when the value is true, named by its destination when the value
    differs from the default.
    """
    by_dest = {action.dest: action for action in parser._actions if action.option_strings}
    by_flag = {
        option[2:].replace("-", "_"): action
        for action in by_dest.values()
        for option in action.option_strings
        if option.startswith("--")
    }
    actions = {**by_dest, **by_flag}
    known = sorted(key for key, action in actions.items() if action.dest not in ("help", "config"))
    unknown = sorted(set(config) - set(known))
    if _LENIENT.get():
        config = {key: value for key, value in config.items() if key not in unknown}
    elif unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; the known keys are {known}")
    words: list[str] = []
    for dest, value in config.items():
        action = actions[dest]
        flag = action.option_strings[-1]
        if value is None:
            continue
        if action.nargs == 0:  # an on/off flag
            if not isinstance(value, bool):
                raise ValueError(f"{source}: {dest} is an on/off flag, expected true or false, got {value!r}")
            if (value is True) if dest in by_flag else (value != action.default):
                words.append(flag)
        elif isinstance(action, argparse._AppendAction):
            if any(option in given or any(word.startswith(option + "=") for word in given)
                   for option in action.option_strings):  # fmt: skip
                continue  # the command line's values replace the file's
            for item in value if isinstance(value, list) else [value]:
                words += [flag, _word(item)]
        elif action.nargs in ("*", "+") or isinstance(action.nargs, int):
            items = value if isinstance(value, list) else [value]
            if items or action.nargs != "+":
                words += [flag, *(_word(item) for item in items)]
        else:
            if isinstance(value, bool):
                raise ValueError(f"{source}: {dest} takes a value, got {value!r}")
            words += [flag, _word(value)]
    return words


def config_path(words: Sequence[str]) -> str | None:
    """The value of the last ``--config FILE`` or ``--config=FILE`` in ``words``, else None."""
    found = None
    for index, word in enumerate(words):
        if word == CONFIG_FLAG and index + 1 < len(words):
            found = words[index + 1]
        elif word.startswith(CONFIG_FLAG + "="):
            found = word.split("=", 1)[1]
    return found


class ConfigParser(argparse.ArgumentParser):
    """An ``argparse`` parser with ``--config FILE``: the file's values come first, the command line's after
    (so they win); errors are argparse's one line and exit code 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("prog", current_program_name())
        super().__init__(*args, **kwargs)
        self.add_argument(
            CONFIG_FLAG,
            metavar="FILE",
            default=None,
            help="JSON or TOML file of flag values (keys: flag names); flags on the command line override it",
        )

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        words = list(sys.argv[1:] if args is None else args)
        path = config_path(words)
        if path is not None and not {"-h", "--help"} & set(words):
            try:
                words = config_words(self, read_config(path), words, f"{CONFIG_FLAG} {path}") + words
            except (ValueError, FileNotFoundError) as error:
                self.error(str(error))
        return super().parse_known_args(words, namespace)
