"""``python -m pyro_bdl.tour``: run the tour (see :mod:`pyro_bdl.tour.runner`)."""

from pyro_bdl.tour.runner import main

raise SystemExit(main())
