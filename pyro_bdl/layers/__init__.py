"""Layers to build Pyro models and networks from, both kinds in one place.

- Binarised layers (BinaryNet, :mod:`~pyro_bdl.layers.binary`) on the XNOR-popcount kernels.
- Bayesian layers (:mod:`~pyro_bdl.layers.bayesian`): ``Bayesian<TorchName>`` whose weight and
  bias are latent sites with a prior of :mod:`~pyro_bdl.layers.priors`, evaluated by
  :mod:`~pyro_bdl.layers.functional` (batched weights) and optionally by a lower-variance
  estimator of :mod:`~pyro_bdl.layers.reparameterization`.
- Bayesian binary layers (:mod:`~pyro_bdl.layers.bayes_binary`): binary layers whose +-1 weights
  are latent sites with a :class:`~pyro_bdl.layers.sign_bernoulli.SignBernoulli` prior.
"""

from pyro_bdl.layers.bayes_binary import BayesianBinaryConv2d, BayesianBinaryLinear, sign_prior_probs
from pyro_bdl.layers.bayesian import (
    BayesianConv1d,
    BayesianConv2d,
    BayesianConv3d,
    BayesianLayer,
    BayesianLinear,
    bayesian_layers,
)
from pyro_bdl.layers.binary import (
    BinaryConv2d,
    BinaryLinear,
    SignSTE,
    binary_conv2d_reference,
    binary_sign,
    glorot_lr_scale,
    sign_ste,
)
from pyro_bdl.layers.binary_training import (
    attach_weight_clipping,
    binary_layers,
    binarynet_param_groups,
    clip_latent_weights,
)
from pyro_bdl.layers.priors import GaussianPrior, Prior, ScaleMixturePrior
from pyro_bdl.layers.sign_bernoulli import SignBernoulli

__all__ = [
    "BayesianBinaryConv2d",
    "BayesianBinaryLinear",
    "BayesianConv1d",
    "BayesianConv2d",
    "BayesianConv3d",
    "BayesianLayer",
    "BayesianLinear",
    "BinaryConv2d",
    "BinaryLinear",
    "GaussianPrior",
    "Prior",
    "ScaleMixturePrior",
    "SignBernoulli",
    "SignSTE",
    "attach_weight_clipping",
    "bayesian_layers",
    "binary_conv2d_reference",
    "binary_layers",
    "binary_sign",
    "binarynet_param_groups",
    "clip_latent_weights",
    "glorot_lr_scale",
    "sign_prior_probs",
    "sign_ste",
]
