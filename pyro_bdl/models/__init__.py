"""Ready-made Pyro models, one file per model (generative process in each docstring)."""

from pyro_bdl.models.bxpca import BXPCAModel
from pyro_bdl.models.glm import GLMModel

__all__ = ["BXPCAModel", "GLMModel"]
