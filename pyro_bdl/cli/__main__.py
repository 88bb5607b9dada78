"""``python -m pyro_bdl.cli``: the same as the ``pyro-bdl`` command."""

import sys

from pyro_bdl.cli import main

sys.exit(main())
