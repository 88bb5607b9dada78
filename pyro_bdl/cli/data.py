"""``pyro-bdl data fetch mnist|uci NAME... --to DIR`` and ``pyro-bdl data list``.

``fetch`` downloads with :func:`pyro_bdl.data.fetch.fetch` (pinned SHA-256s, atomic writes,
files already present and correct are kept) into ``DIR/mnist/`` or ``DIR/uci/<name>/``, the
layout the examples read with ``--data DIR`` or ``PYRO_BDL_DATA=DIR``. ``list`` prints what can
be fetched, with sizes and sources.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

from pyro_bdl.cli.base import CommandError, add_parser
from pyro_bdl.data.fetch import DATASETS, URL_ENV, base_url_for, entries, fetch, format_size, registry, uci_names
from pyro_bdl.data.mnist import DATA_ENV

ALL = "all"
"""``pyro-bdl data fetch uci all``: every UCI set."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    subcommands = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
    fetch_parser = add_parser(
        subcommands,
        "fetch",
        "download a data set into DIR, checking every file's SHA-256",
        "Download a data set into DIR/mnist/ or DIR/uci/<name>/ (the layout --data and PYRO_BDL_DATA\n"
        "expect), checking every file against its pinned SHA-256. Files already there and correct are\n"
        "kept; nothing half-written is ever left under a file's name.\n\n"
        "  pyro-bdl data fetch mnist --to ~/pyro-bdl-data\n"
        "  pyro-bdl data fetch uci yacht bostonHousing --to ~/pyro-bdl-data\n\n"
        f"Sources can be changed with --base-url or {URL_ENV['mnist']} / {URL_ENV['uci']}.",
    )
    fetch_parser.add_argument("dataset", choices=DATASETS, help="which data set")
    fetch_parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"for uci: the sets to fetch, or '{ALL}' (see pyro-bdl data list)"
    )
    fetch_parser.add_argument(
        "--to",
        type=Path,
        metavar="DIR",
        default=None,
        help=f"data folder to fill (default: ${DATA_ENV} if set; otherwise --to is required)",
    )
    fetch_parser.add_argument(
        "--base-url",
        default=None,
        metavar="URL",
        help="download from here instead: <URL>/<file> for mnist, <URL>/<name>/data/<file> for uci "
        f"(default: ${URL_ENV['mnist']} / ${URL_ENV['uci']}, else the public source)",
    )
    fetch_parser.add_argument("--no-progress", action="store_true", help="no progress bars (they show on a terminal)")
    fetch_parser.set_defaults(_action=_fetch)
    list_parser = add_parser(subcommands, "list", "what can be fetched, with sizes and sources")
    list_parser.set_defaults(_action=_list)


def run(args: argparse.Namespace) -> int:
    return args._action(args)


def _fetch(args: argparse.Namespace) -> int:
    to = args.to if args.to is not None else os.environ.get(DATA_ENV)
    if not to:
        raise CommandError(f"--to DIR is required (or set {DATA_ENV} to the data folder)")
    root = Path(to).expanduser().resolve()
    names = uci_names() if args.dataset == "uci" and args.names == [ALL] else args.names
    entries(args.dataset, names)  # every name checked before anything is downloaded
    base_url_for(args.dataset, args.base_url)
    groups = [(name,) for name in names] if args.dataset == "uci" else [()]
    progress = not args.no_progress and sys.stderr.isatty()
    for group in groups:
        done = fetch(args.dataset, *group, to=root, base_url=args.base_url, progress=progress)
        counts = Counter(item.status for item in done)
        folder = done[0].path.parent
        summary = ", ".join(f"{counts[status]} {status}" for status in ("downloaded", "replaced", "present"))
        size = format_size(sum(item.size for item in done))
        print(f"{'/'.join([args.dataset, *group])}: {len(done)} files ({size}) in {folder}: {summary}")
    print(f"read them with --data {root} or export {DATA_ENV}={root}")
    return 0


def _list(args: argparse.Namespace) -> int:
    files: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for entry in registry():
        files[entry.group] += 1
        sizes[entry.group] += entry.size
    print(f"{'data set':<32} {'files':>5} {'size':>9}")
    for group in files:
        print(f"{' '.join(group.split('/')):<32} {files[group]:>5} {format_size(sizes[group]):>9}")
    print(f"{'all':<32} {files.total():>5} {format_size(sizes.total()):>9}")
    print(f"sources: mnist {base_url_for('mnist')}<file>, uci {base_url_for('uci')}<name>/data/<file>")
    print(f"fetch with: pyro-bdl data fetch mnist --to DIR, or pyro-bdl data fetch uci NAME... --to DIR (or {ALL})")
    return 0
