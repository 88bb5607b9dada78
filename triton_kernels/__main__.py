"""``python -m triton_kernels``: see :mod:`triton_kernels.cli`."""

import sys

from triton_kernels.cli import main

sys.exit(main())
