"""Bayesian neural networks: Bayesian layers, priors, guides, models and reparameterisations.

Build a BNN the way Pyro users already do (``PyroModule[nn.Linear]`` with ``PyroSample``
priors), or convert an ordinary torch network::

    net = nn.Sequential(nn.Linear(1, 50), nn.ReLU(), nn.Linear(50, 1))
    model = BNNRegressor(bayesianize(net, prior=GaussianPrior(1.0)), noise="homoscedastic")
    guide = MeanFieldGuide(model)            # means at the net's init, scales 0.1 x its size
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())   # model(x, y)
    Predictive(model, guide=guide, num_samples=100)(x)["obs"]     # (100, N)

Modules: :mod:`~pyro_bdl.bnn.convert` (``bayesianize``), :mod:`~pyro_bdl.bnn.guides`
(mean-field and MAP guides initialised from the deterministic network),
:mod:`~pyro_bdl.bnn.models` (regression, classification, MC dropout) and
:mod:`~pyro_bdl.bnn.mcmc` (NUTS for small networks). The building blocks live in
:mod:`pyro_bdl.layers` and are re-exported here: the Bayesian layers
(``BayesianLinear``, ``BayesianConv{1,2,3}d``), priors (Gaussian, scale mixture) and the
local reparameterisation and flipout estimators. See ``docs/bnn.md``.

Model conventions (:mod:`pyro_bdl.conventions`): ``model(x, y=None, *, obs_mask=None,
num_data=None)``; data plate ``"data"`` at dim -1 over the rows of
``x``; observed site ``"obs"``; weights are global latent sites named after the module path
(e.g. ``"net.0.weight"``). The layers broadcast over extra leading sample dims of the
weights (``Predictive(parallel=True)``, ``vectorize_particles=True``) when the layers
between them do too (MLPs; conv nets with ``nn.Flatten(-3)``).
"""

from pyro_bdl.bnn.convert import bayesianize
from pyro_bdl.bnn.guides import MAPGuide, MeanFieldGuide, init_to_deterministic
from pyro_bdl.bnn.mcmc import run_nuts
from pyro_bdl.bnn.models import BNNClassifier, BNNRegressor, MCDropoutClassifier, MCDropoutRegressor
from pyro_bdl.conventions import DATA_PLATE, OBS_SITE
from pyro_bdl.layers.bayesian import BayesianConv1d, BayesianConv2d, BayesianConv3d, BayesianLinear, bayesian_layers
from pyro_bdl.layers.priors import GaussianPrior, Prior, ScaleMixturePrior
from pyro_bdl.layers.reparameterization import (
    Flipout,
    LocalReparameterization,
    Reparameterization,
    flipout,
    local_reparameterization,
)

__all__ = [
    "DATA_PLATE",
    "OBS_SITE",
    "BNNClassifier",
    "BNNRegressor",
    "BayesianConv1d",
    "BayesianConv2d",
    "BayesianConv3d",
    "BayesianLinear",
    "Flipout",
    "GaussianPrior",
    "LocalReparameterization",
    "MAPGuide",
    "MCDropoutClassifier",
    "MCDropoutRegressor",
    "MeanFieldGuide",
    "Prior",
    "Reparameterization",
    "ScaleMixturePrior",
    "bayesian_layers",
    "bayesianize",
    "flipout",
    "init_to_deterministic",
    "local_reparameterization",
    "run_nuts",
]
