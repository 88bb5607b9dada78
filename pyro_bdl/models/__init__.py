"""Ready-made Pyro models, one file per model (generative process in each docstring)."""

from pyro_bdl.models.bxpca import BXPCAModel
from pyro_bdl.models.dlgm import DLGM
from pyro_bdl.models.dlgm_guide import DLGMGuide
from pyro_bdl.models.glm import GLMModel

__all__ = ["DLGM", "BXPCAModel", "DLGMGuide", "GLMModel"]
