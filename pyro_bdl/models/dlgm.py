"""Deep latent Gaussian model, DLGM (Rezende, Mohamed & Wierstra 2014).

``L >= 1`` stochastic Gaussian layers with deterministic MLPs between them, top-down, and any
observation model of :mod:`pyro_bdl.observation`. Generative process for a table ``x`` of
shape (data, features), with ``xi_l ~ N(0, I)``::

    for n in data:                                   plate "data", dim -1
        z_L = xi_L                                   site "z_L", (d_L,)
        z_l = T_l(z_{l+1}) + G_l xi_l, l = L-1 .. 1  site "z_l", (d_l,)
        eta = T_0(z_1)                               (features,), (features, K) for categorical
        x_n ~ p(x | eta)                             site "obs", the features are one event

``T_l`` is an MLP (``hidden_dims[l]``, ``activation``), ``T_0`` the decoder; with no hidden
layers it is linear. ``G_l`` is a learned diagonal scale (``layer_scale="fixed"``, the paper's
equations), or the MLP ``T_l`` outputs the scale too (``layer_scale="amortised"``, as in Kingma &
Welling 2014 and Burda et al. 2015). The top layer's ``G_L`` is the identity: any other scale
is absorbed by the first linear map of ``T_{L-1}``.

Special cases: ``L = 1`` with ``bernoulli_logit`` is the variational auto-encoder (Kingma &
Welling 2014); ``L = 1``, ``hidden_dims=((),)`` and a ``gaussian`` observation with a
per-feature ``scale`` (``observation_params={"scale": torch.ones(D)}``) is factor analysis,
``x ~ N(b, W W^T + diag(scale^2))``.

The model broadcasts over extra leading dimensions (vectorised particles, ``Predictive`` with
``parallel=True``): a latent site is ``(*outer, data, d_l)``, ``obs`` is ``(*outer, data,
features)``. Missing entries (``obs_mask`` False) are left out of the likelihood entry by entry
(their values in ``x`` are ignored, NaN allowed), i.e. they are marginalised exactly.

The amortised guide is :class:`~pyro_bdl.models.dlgm_guide.DLGMGuide`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule, PyroParam
from pyro.nn.module import to_pyro_module_
from torch import nn

from pyro_bdl.conventions import DATA_PLATE, OBS_SITE
from pyro_bdl.observation import ObservationModel
from pyro_bdl.validation import check_choice, check_int, check_model_rows

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus, "elu": nn.ELU}

LAYER_SCALES = ("fixed", "amortised")

MIN_SCALE = 1e-4
"""Floor added to every predicted standard deviation, so log densities stay finite."""


def latent_site(layer: int) -> str:
    """The site name of stochastic layer ``layer`` (1 = next to the data)."""
    return f"z_{layer}"


def check_architecture(
    latent_dims: Sequence[int], hidden_dims: Sequence[int] | Sequence[Sequence[int]], activation: str
) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]:
    """Validate and normalise the sizes shared by model and guide.

    Args:
        latent_dims: ``(d_1, ..., d_L)``, bottom (next to the data) to top, ``L >= 1``.
        hidden_dims: hidden sizes of each MLP ``T_0 .. T_{L-1}`` (``T_l`` maps layer ``l + 1`` to
            layer ``l``; layer 0 is the data); a flat sequence of ints is used for every ``T_l``.
        activation: a key of :data:`ACTIVATIONS`.

    Returns:
        ``(latent_dims, hidden_dims)`` as tuples, ``hidden_dims`` with ``L`` entries.
    """
    latent_dims = tuple(latent_dims)
    if len(latent_dims) == 0:
        raise ValueError("latent_dims must list at least one stochastic layer (L >= 1), got ()")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in latent_dims):
        raise ValueError(f"latent_dims must be positive ints, got {latent_dims}")
    hidden_dims = tuple(hidden_dims)
    if all(isinstance(h, int) for h in hidden_dims):
        hidden_dims = (hidden_dims,) * len(latent_dims)
    hidden_dims = tuple(tuple(h) for h in hidden_dims)
    if len(hidden_dims) != len(latent_dims):
        raise ValueError(
            f"hidden_dims must give one tuple of hidden sizes per stochastic layer ({len(latent_dims)}), "
            f"got {len(hidden_dims)}: {hidden_dims}"
        )
    if not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for hs in hidden_dims for h in hs):
        raise ValueError(f"hidden_dims must hold positive ints, got {hidden_dims}")
    check_choice("activation", activation, tuple(ACTIVATIONS))
    return latent_dims, hidden_dims


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int | None, activation: str) -> PyroModule:
    """A ``PyroModule`` MLP: ``in_dim -> hidden... -> out_dim`` (linear output).

    With ``out_dim=None`` it ends after the last hidden activation (a feature extractor; the
    identity when ``hidden`` is empty). Broadcasts over leading dimensions.
    """
    layers: list[nn.Module] = []
    width = in_dim
    for size in hidden:
        layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
        width = size
    if out_dim is not None:
        layers.append(nn.Linear(width, out_dim))
    net = nn.Sequential(*layers) if layers else nn.Identity()
    to_pyro_module_(net)
    return net


def mlp_out_dim(in_dim: int, hidden: Sequence[int]) -> int:
    """The width of ``mlp(in_dim, hidden, None, ...)``'s output."""
    return hidden[-1] if hidden else in_dim


class GaussianHead(PyroModule):
    """An MLP whose output is split into a Gaussian's ``loc`` and ``scale`` (softplus + floor).

    Shapes: input ``(..., in_dim)``; returns ``loc, scale`` each ``(..., out_dim)``.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, activation: str) -> None:
        super().__init__()
        self.net = mlp(in_dim, hidden, 2 * out_dim, activation)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw_scale = self.net(x).chunk(2, dim=-1)
        return loc, F.softplus(raw_scale) + MIN_SCALE


def expand_cat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Concatenate along the last dim after broadcasting the leading dims (particles)."""
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(*shape, a.shape[-1]), b.expand(*shape, b.shape[-1])], dim=-1)


class DLGM(PyroModule):
    """The deep latent Gaussian model (see the module docstring for the generative process).

    Args:
        data_dim: number of features D of each data point.
        latent_dims: ``(d_1, ..., d_L)``, sizes of the stochastic layers, bottom to top.
        hidden_dims: hidden sizes of ``T_0`` (the decoder) .. ``T_{L-1}``; a flat sequence of
            ints is used for every ``T_l``; ``()`` for ``T_0`` makes the decoder linear.
        observation: a name from :data:`pyro_bdl.observation.OBSERVATION_MODELS`. Models
            whose ``eta`` must be positive (``gamma_reciprocal``) get ``softplus`` of the decoder output.
        activation: nonlinearity of the MLPs, a key of :data:`ACTIVATIONS`.
        layer_scale: ``"fixed"`` (learned diagonal ``G_l``) or ``"amortised"`` (``T_l`` outputs
            the scale); irrelevant when ``L = 1``.
        num_classes: K for ``categorical`` (the decoder outputs D * K logits) and ``ordinal_logit``.
        learn_params: learn the likelihood's parameters as point estimates (else fixed).
        observation_params: initial (or fixed) likelihood parameters (e.g. ``{"scale": torch.ones(D)}``
            for a learned per-feature Gaussian noise), passed to :class:`ObservationModel`.
        name: prefix of the parameter names in Pyro's param store.

    Call as ``model(x, *, obs_mask=None)`` with ``x`` (data, D) to condition, or
    ``model(None, num_data=N)`` to sample; returns the value of ``obs`` ``(*outer, data, D)``.
    Under ``JitTrace_ELBO`` the NaN check of ``x`` stays in the compiled graph
    (:func:`pyro_bdl.validation.check_table`).
    """

    def __init__(
        self,
        data_dim: int,
        latent_dims: Sequence[int] = (50,),
        hidden_dims: Sequence[int] | Sequence[Sequence[int]] = ((200, 200),),
        observation: str = "bernoulli_logit",
        *,
        activation: str = "tanh",
        layer_scale: Literal["fixed", "amortised"] = "fixed",
        num_classes: int | None = None,
        learn_params: bool = True,
        observation_params: dict | None = None,
        name: str = "dlgm",
    ) -> None:
        super().__init__(name)
        check_int("data_dim", data_dim)
        self.latent_dims, self.hidden_dims = check_architecture(latent_dims, hidden_dims, activation)
        check_choice("layer_scale", layer_scale, LAYER_SCALES)
        self.data_dim = data_dim
        self.layer_scale = layer_scale
        self.activation_name = activation
        self.likelihood = ObservationModel(
            observation,
            event_dim=1,
            plates=(),
            learn_params=learn_params,
            num_classes=num_classes,
            **(observation_params or {}),
        )
        spec = self.likelihood.spec
        if spec.eta_event_ndim:
            if num_classes is None or num_classes < 2:
                raise ValueError(f"observation={observation!r} needs num_classes >= 2, got {num_classes}")
            self.eta_size = num_classes
        else:
            self.eta_size = 1
        self.positive_eta = spec.eta_positive
        L = self.num_layers
        self.decoder = mlp(self.latent_dims[0], self.hidden_dims[0], data_dim * self.eta_size, activation)
        transitions: list[nn.Module] = []
        for layer in range(1, L):  # T_l maps z_{l+1} to the parameters of z_l
            above, here = self.latent_dims[layer], self.latent_dims[layer - 1]
            if layer_scale == "amortised":
                transitions.append(GaussianHead(above, self.hidden_dims[layer], here, activation))
            else:
                transitions.append(mlp(above, self.hidden_dims[layer], here, activation))
        self.transitions = PyroModule[nn.ModuleList](transitions)
        if layer_scale == "fixed" and L > 1:
            self.layer_scales = PyroParam(torch.ones(sum(self.latent_dims[:-1])), constraint=dist.constraints.positive)
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    @property
    def num_layers(self) -> int:
        """L, the number of stochastic layers."""
        return len(self.latent_dims)

    def _layer_scale(self, layer: int) -> torch.Tensor:
        """``diag(G_layer)``, (d_layer,), for the fixed-scale parametrisation."""
        start = sum(self.latent_dims[: layer - 1])
        return self.layer_scales[start : start + self.latent_dims[layer - 1]]

    def transition(self, layer: int, z_above: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``loc, scale`` of ``p(z_layer | z_{layer+1})``, each ``(..., d_layer)``, for ``1 <= layer < L``."""
        net = self.transitions[layer - 1]
        if self.layer_scale == "amortised":
            return net(z_above)
        loc = net(z_above)
        return loc, self._layer_scale(layer).expand_as(loc)

    def natural_parameter(self, z_1: torch.Tensor) -> torch.Tensor:
        """``eta = T_0(z_1)``: ``(..., D)``, or ``(..., D, K)`` for ``categorical``."""
        eta = self.decoder(z_1)
        if self.eta_size > 1:
            eta = eta.unflatten(-1, (self.data_dim, self.eta_size))
        if self.positive_eta:
            eta = F.softplus(eta) + MIN_SCALE
        return eta

    def forward(
        self,
        x: torch.Tensor | None = None,
        *,
        obs_mask: torch.Tensor | None = None,
        num_data: int | None = None,
    ) -> torch.Tensor:
        size, x = check_model_rows(x, num_data, obs_mask, self.data_dim)
        L = self.num_layers
        zero = self._zero if x is None else x.new_zeros(())
        with pyro.plate(DATA_PLATE, size, dim=-1):
            top = dist.Normal(zero, 1.0).expand([size, self.latent_dims[-1]]).to_event(1)
            z = pyro.sample(latent_site(L), top)
            for layer in range(L - 1, 0, -1):
                loc, scale = self.transition(layer, z)
                z = pyro.sample(latent_site(layer), dist.Normal(loc, scale).to_event(1))
            eta = self.natural_parameter(z)
            if obs_mask is None:
                return self.likelihood(eta, obs=x, site_name=OBS_SITE)
            return self.likelihood.observe_entries(eta, x, obs_mask, site_name=OBS_SITE)

    def extra_repr(self) -> str:
        return (
            f"data_dim={self.data_dim}, latent_dims={self.latent_dims}, hidden_dims={self.hidden_dims}, "
            f"observation={self.likelihood.model_name!r}, layer_scale={self.layer_scale!r}"
        )
