"""``pyro-bdl tour``: every model family trained in minutes on the sample shipped in the package.

The options and the run are :mod:`pyro_bdl.tour.runner`'s (``add_tour_arguments``,
``run_from_arguments``); nothing is copied. Exit status 0 when every section ran, 1 if one
failed (the report says which), 2 for a bad option (no GPU for ``--device cuda``).
"""

from pyro_bdl.tour.runner import add_tour_arguments as add_arguments
from pyro_bdl.tour.runner import run_from_arguments as run

__all__ = ["add_arguments", "run"]
