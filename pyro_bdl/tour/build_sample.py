"""``python -m pyro_bdl.tour.build_sample --mnist DIR --uci DIR``: rebuild the tour's embedded data files.

See :mod:`pyro_bdl.tour.data` for what they hold and ``sample_data/ATTRIBUTION.md`` for their licences.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from pyro_bdl.tour.data import SAMPLE_FOLDER, build_sample


def main(argv: Sequence[str] | None = None) -> int:
    """Rebuild the embedded files from ``--mnist`` and ``--uci`` into ``--out`` (default: the package's folder)."""
    parser = argparse.ArgumentParser(
        prog="python -m pyro_bdl.tour.build_sample",
        description="Rebuild the tour's embedded MNIST sample and UCI yacht split.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = os.environ.get("PYRO_BDL_DATA") or "../shared/data"
    parser.add_argument("--mnist", type=Path, default=Path(data) / "mnist", help="folder of the MNIST IDX files")
    parser.add_argument("--uci", type=Path, default=Path(data) / "uci", help="folder of the UCI data sets")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / SAMPLE_FOLDER, help="where to write the .npz files"
    )
    args = parser.parse_args(argv)
    for path in build_sample(args.mnist, args.uci, args.out):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
