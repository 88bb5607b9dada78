"""The tour's sections, in the order the report shows them.

Each section is one function ``run(data: TourData, out: Path, budget: Budget) -> Section`` in its own
module; it writes its figures into ``out`` (its own folder) and returns its numbers and text. Adding a
section is one such module and one entry in :data:`SECTIONS`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pyro_bdl.tour.core import Budget, Section
from pyro_bdl.tour.data import TourData
from pyro_bdl.tour.sections import bayesian_binary, binary_mlp, bnn, dlgm, kernels, m2, rbm

SectionFunction = Callable[[TourData, Path, Budget], Section]

SECTIONS: dict[str, SectionFunction] = {
    "dlgm": dlgm.run,
    "m2": m2.run,
    "bnn": bnn.run,
    "rbm": rbm.run,
    "binary_mlp": binary_mlp.run,
    "bayesian_binary": bayesian_binary.run,
    "kernels": kernels.run,
}
"""Section key -> function; the keys name the sections' folders and their entries in ``report.json``."""

PENDING: dict[str, str] = {}
"""Sections the report names as not yet available, with why; never numbers."""

__all__ = ["PENDING", "SECTIONS", "SectionFunction"]
