"""The tour: small versions of every model family trained on data shipped in the package, and a report.

``run_tour(out_dir, quick=False, seed=0, progress=True, device=None)`` runs every section of
:data:`~pyro_bdl.tour.sections.SECTIONS` (DLGM with imputation, M2 with analogies, BNNs with ArviZ
diagnostics and calibration, an RBM with AIS, a binary MLP on the packed XNOR kernels, the kernel
self-check) on :func:`~pyro_bdl.tour.data.load_sample`'s 4,000 MNIST digits and UCI yacht split, and
writes ``report.md`` (figures linked), ``report.html`` (figures inside the file) and ``report.json``.
From a shell: ``python -m pyro_bdl.tour`` (``--quick`` for the reduced mode; ``--help`` for the rest).
:func:`add_tour_arguments` and :func:`run_from_arguments` let another command line (``pyro-bdl tour``)
offer the same options.
"""

from pyro_bdl.tour.core import Budget, Section
from pyro_bdl.tour.data import TourData, load_sample
from pyro_bdl.tour.runner import add_tour_arguments, main, run_from_arguments, run_tour
from pyro_bdl.tour.sections import PENDING, SECTIONS

__all__ = [
    "PENDING",
    "SECTIONS",
    "Budget",
    "Section",
    "TourData",
    "add_tour_arguments",
    "load_sample",
    "main",
    "run_from_arguments",
    "run_tour",
]
