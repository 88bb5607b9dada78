"""Sigmoid belief network, SBN (Neal 1992), and its amortised guide with score-function baselines.

``L >= 1`` layers of binary latents, top-down, with a Bernoulli (or any GLM-table) observation.
Generative process for binary rows ``x`` of shape (data, D)::

    for n in data:                                        plate "data", dim -1
        h_L ~ Bernoulli(sigmoid(b_L))                     site "z_L", (d_L,)
        h_l ~ Bernoulli(sigmoid(W_l h_{l+1} + b_l))       site "z_l", (d_l,), l = L-1 .. 1
        x_n ~ p(x | eta = W_0 h_1 + b_0)                  site "obs", the D features are one event

The guide (inference network) of Mnih & Gregor 2014 ("NVIL", sec. 2 and 6) mirrors it
bottom-up with linear-sigmoid layers::

    q(h_1 | x)       = Bernoulli(sigmoid(A_1 x + c_1))
    q(h_l | h_{l-1}) = Bernoulli(sigmoid(A_l h_{l-1} + c_l))          l = 2 .. L

The latents are discrete, so ``TraceGraph_ELBO`` trains the guide with the score-function
(REINFORCE) estimator, one learning signal per layer and datum (Pyro's downstream cost of the
site). The guide attaches Pyro's own baseline options to each layer's site,
``infer={"baseline": ...}`` (see ``docs/control_variates.md``):

* ``"none"``: plain REINFORCE;
* ``"average"``: ``use_decaying_avg_baseline`` with ``baseline_beta``;
* ``"constant"``: a learned scalar per layer passed as ``baseline_value``;
* ``"neural"``: NVIL's input-dependent baseline, ``nn_baseline`` (one tanh hidden layer) fed
  ``nn_baseline_input`` = the layer's conditioning input (``x`` for layer 1, ``h_{l-1}``
  above), on top of the decaying average (``c + C_psi(input)`` as in NVIL's Algorithm 1).

NVIL's variance normalisation is a loss option, not a guide option:
:class:`~pyro_bdl.inference.control_variates.NormalisedTraceGraph_ELBO`.

With ``temperature`` set, model and guide draw each layer from Pyro's
``RelaxedBernoulliStraightThrough`` (Concrete relaxation, Maddison et al. 2017; hard samples
forward, relaxed gradients backward) so ``Trace_ELBO`` can reparameterise: a biased but
low-variance alternative, used by ``benchmarks/bench_control_variates.py``.

Model and guide broadcast over leading particle dims (vectorised importance sampling): a
latent site is ``(*outer, data, d_l)``, ``obs`` is ``(*outer, data, D)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from torch import nn

from pyro_bdl.conventions import DATA_PLATE, OBS_SITE
from pyro_bdl.models.dlgm import latent_site
from pyro_bdl.observation import ObservationModel
from pyro_bdl.validation import (
    check_choice,
    check_guide_rows,
    check_int,
    check_model_rows,
    check_positive,
)

BASELINES = ("none", "average", "constant", "neural")


def check_latent_dims(latent_dims: Sequence[int]) -> tuple[int, ...]:
    """``(d_1, ..., d_L)`` as a tuple of positive ints, ``L >= 1`` (bottom to top)."""
    dims = tuple(latent_dims)
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims):
        raise ValueError(f"latent_dims must be one or more positive ints (bottom to top), got {latent_dims!r}")
    return dims


def layer_distribution(logits: torch.Tensor, temperature: float | None) -> dist.TorchDistribution:
    """A layer of independent binary units with event shape ``(d,)``: Bernoulli or its relaxation."""
    if temperature is None:
        return dist.Bernoulli(logits=logits).to_event(1)
    return dist.RelaxedBernoulliStraightThrough(
        torch.as_tensor(temperature, dtype=logits.dtype), logits=logits
    ).to_event(1)


class SigmoidBeliefNetwork(PyroModule):
    """The SBN ``p(x, h_1 .. h_L)`` (generative process in the module docstring).

    Args:
        data_dim: D, features of a row.
        latent_dims: ``(d_1, ..., d_L)``, bottom (next to the data) to top; NVIL's MNIST
            models are ``(200,)``, ``(200, 200)`` and ``(200, 200, 200)``.
        observation: a name from :data:`pyro_bdl.observation.OBSERVATION_MODELS` whose
            natural parameter is real (``bernoulli_logit`` for binarised images).
        temperature: None for binary latents; a positive Concrete temperature for the
            straight-through relaxation (must match the guide's).
        learn_params: learn the observation model's parameters (if it has any).
        observation_params: its initial or fixed parameters.
        name: prefix of the parameter names in Pyro's param store.

    Call as ``model(x, *, obs_mask=None)`` with ``x`` (data, D), or ``model(None, num_data=N)``
    to sample; returns the value of ``obs`` ``(*outer, data, D)``. ``obs_mask`` (data, D) marks
    observed entries; missing ones are left out of the likelihood (marginalised exactly).
    """

    def __init__(
        self,
        data_dim: int,
        latent_dims: Sequence[int] = (200,),
        observation: str = "bernoulli_logit",
        *,
        temperature: float | None = None,
        learn_params: bool = True,
        observation_params: dict | None = None,
        name: str = "sbn",
    ) -> None:
        super().__init__(name)
        self.data_dim = check_int("data_dim", data_dim)
        self.latent_dims = check_latent_dims(latent_dims)
        self.temperature = check_positive("temperature", temperature, allow_none=True)
        self.likelihood = ObservationModel(
            observation, event_dim=1, plates=(), learn_params=learn_params, **(observation_params or {})
        )
        spec = self.likelihood.spec
        if spec.eta_event_ndim or spec.eta_positive:
            raise ValueError(
                f"observation must take one real natural parameter per feature (e.g. 'bernoulli_logit'), "
                f"got {observation!r}"
            )
        self.top_logits = PyroParam(torch.zeros(self.latent_dims[-1]))
        sizes = (self.data_dim, *self.latent_dims)
        # decoders[l] maps h_{l+1} to the logits of layer l (layer 0 is the data)
        self.decoders = PyroModule[nn.ModuleList](
            [PyroModule[nn.Linear](sizes[i + 1], sizes[i]) for i in range(len(self.latent_dims))]
        )

    @property
    def num_layers(self) -> int:
        """L, the number of stochastic layers."""
        return len(self.latent_dims)

    def forward(
        self,
        x: torch.Tensor | None = None,
        *,
        obs_mask: torch.Tensor | None = None,
        num_data: int | None = None,
    ) -> torch.Tensor:
        size, x = check_model_rows(x, num_data, obs_mask, self.data_dim)
        with pyro.plate(DATA_PLATE, size, dim=-1):
            logits = self.top_logits.expand(size, self.latent_dims[-1])
            h = pyro.sample(latent_site(self.num_layers), layer_distribution(logits, self.temperature))
            for layer in range(self.num_layers - 1, 0, -1):
                h = pyro.sample(latent_site(layer), layer_distribution(self.decoders[layer](h), self.temperature))
            eta = self.decoders[0](h)
            if obs_mask is None:
                return self.likelihood(eta, obs=x, site_name=OBS_SITE)
            return self.likelihood.observe_entries(eta, x, obs_mask, site_name=OBS_SITE)

    def extra_repr(self) -> str:
        return f"data_dim={self.data_dim}, latent_dims={self.latent_dims}, temperature={self.temperature}"


def baseline_network(in_dim: int, hidden: int) -> nn.Module:
    """NVIL's input-dependent baseline ``C_psi``: ``(..., in_dim) -> (...)``, one tanh hidden layer."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1), nn.Flatten(-2, -1))


class SBNGuide(PyroModule):
    """The inference network ``q(h_1 .. h_L | x)`` with per-layer score-function baselines.

    Args:
        data_dim: D.
        latent_dims: ``(d_1, ..., d_L)`` as in the model.
        baseline: ``"none"``, ``"average"``, ``"constant"`` or ``"neural"`` (module docstring).
        baseline_beta: decay of the running average (``"average"``, ``"neural"``); NVIL's
            alpha = 0.8, Pyro's default 0.9.
        baseline_hidden: tanh units of each neural baseline (NVIL: 100).
        temperature: as for the model (None: binary latents, score-function gradients).
        name: prefix of the parameter names in Pyro's param store.

    Call as ``guide(x, *, obs_mask=None, num_data=None)`` (``x`` required); missing entries
    (``obs_mask`` False) are fed to the encoder as 0. Returns ``[h_1, ..., h_L]``.
    The neural baselines are plain torch modules registered with ``pyro.module`` at each call
    (so :func:`~pyro_bdl.inference.fit` trains and checkpoints them with the guide); their
    squared-error loss is added by ``TraceGraph_ELBO``.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dims: Sequence[int] = (200,),
        *,
        baseline: str = "neural",
        baseline_beta: float = 0.8,
        baseline_hidden: int = 100,
        temperature: float | None = None,
        name: str = "sbn_guide",
    ) -> None:
        super().__init__(name)
        self.data_dim = check_int("data_dim", data_dim)
        self.latent_dims = check_latent_dims(latent_dims)
        self.baseline = check_choice("baseline", baseline, BASELINES)
        if not 0.0 <= baseline_beta < 1.0:
            raise ValueError(f"baseline_beta must lie in [0, 1), got {baseline_beta}")
        self.baseline_beta = float(baseline_beta)
        check_int("baseline_hidden", baseline_hidden)
        self.temperature = check_positive("temperature", temperature, allow_none=True)
        sizes = (self.data_dim, *self.latent_dims)
        self.encoders = PyroModule[nn.ModuleList](
            [PyroModule[nn.Linear](sizes[i], sizes[i + 1]) for i in range(len(self.latent_dims))]
        )
        if baseline == "neural":
            self.baselines = nn.ModuleList(
                [baseline_network(sizes[i], baseline_hidden) for i in range(len(self.latent_dims))]
            )
        if baseline == "constant":
            self.baseline_values = PyroParam(torch.zeros(len(self.latent_dims)))

    @classmethod
    def for_model(cls, model: SigmoidBeliefNetwork, **kwargs) -> SBNGuide:
        """A guide with ``model``'s sizes and temperature; ``kwargs`` as for ``__init__``."""
        kwargs.setdefault("temperature", model.temperature)
        return cls(model.data_dim, model.latent_dims, **kwargs)

    @property
    def num_layers(self) -> int:
        return len(self.latent_dims)

    def baseline_options(self, layer: int, below: torch.Tensor) -> dict:
        """The ``infer={"baseline": ...}`` dict of layer ``layer`` whose conditioning input is ``below``."""
        # --8<-- [start:baselines]
        if self.baseline == "none" or self.temperature is not None:
            return {}
        if self.baseline == "constant":
            return {"baseline_value": self.baseline_values[layer - 1].expand(below.shape[:-1])}
        options = {"use_decaying_avg_baseline": True, "baseline_beta": self.baseline_beta}
        if self.baseline == "neural":
            options.update(nn_baseline=self.baselines[layer - 1], nn_baseline_input=below)
        return options
        # --8<-- [end:baselines]

    def forward(
        self,
        x: torch.Tensor | None = None,
        *,
        obs_mask: torch.Tensor | None = None,
        num_data: int | None = None,
    ) -> list[torch.Tensor]:
        size, x = check_guide_rows(x, num_data, obs_mask, self.data_dim)
        if self.baseline == "neural":
            pyro.module(f"{self._pyro_name}.baselines", self.baselines, update_module_params=True)
        hs: list[torch.Tensor] = []
        below = x
        with pyro.plate(DATA_PLATE, size, dim=-1):
            for layer in range(1, self.num_layers + 1):
                fn = layer_distribution(self.encoders[layer - 1](below), self.temperature)
                options = self.baseline_options(layer, below)
                below = pyro.sample(latent_site(layer), fn, infer={"baseline": options} if options else {})
                hs.append(below)
        return hs

    def extra_repr(self) -> str:
        return f"data_dim={self.data_dim}, latent_dims={self.latent_dims}, baseline={self.baseline!r}"
