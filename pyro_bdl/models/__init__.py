"""Ready-made Pyro models, one file per model (generative process in each docstring)."""

from pyro_bdl.models.bayes_binary import BayesBinaryConvNet, BayesBinaryMLP, BernoulliMeanFieldGuide
from pyro_bdl.models.bxpca import BXPCAModel
from pyro_bdl.models.dlgm import DLGM
from pyro_bdl.models.dlgm_guide import DLGMGuide
from pyro_bdl.models.draw import DRAW, DRAWGuide
from pyro_bdl.models.glm import GLMModel
from pyro_bdl.models.m2 import M2, M2Guide
from pyro_bdl.models.rbm import RBM, RBMGuide
from pyro_bdl.models.rbm_stack import RBMStack, greedy_stack, train_rbm
from pyro_bdl.models.sbn import SBNGuide, SigmoidBeliefNetwork

__all__ = [
    "DLGM",
    "DRAW",
    "M2",
    "RBM",
    "BXPCAModel",
    "BayesBinaryConvNet",
    "BayesBinaryMLP",
    "BernoulliMeanFieldGuide",
    "DLGMGuide",
    "DRAWGuide",
    "GLMModel",
    "M2Guide",
    "RBMGuide",
    "RBMStack",
    "SBNGuide",
    "SigmoidBeliefNetwork",
    "greedy_stack",
    "train_rbm",
]
