"""pyro-bdl: Bayesian deep learning on Pyro, with binarised layers on XNOR-popcount kernels.

The kernels live in the sibling package :mod:`triton_kernels` (torch and triton only);
this package holds the Pyro side: layers, observation models, models, inference and
diagnostics, added issue by issue (see ``docs/index.md`` for what is there today).
"""

__version__ = "0.1.0"
