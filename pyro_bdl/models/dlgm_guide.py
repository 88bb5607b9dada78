"""Amortised structured guide (encoder) for :class:`~pyro_bdl.models.dlgm.DLGM`.

A deterministic bottom-up pass, then top-down sampling in the model's order::

    a_0 = x;  a_l = E_l(a_{l-1})                      l = 1 .. L (MLPs, hidden_dims[l-1])
    q(z_L | x)            = N(mu_L(a_L), sigma_L(a_L))
    q(z_l | z_{l+1}, x)   = N(mu_l([a_l, z_{l+1}]), sigma_l([a_l, z_{l+1}]))   l = L-1 .. 1

so ``q(z_1..z_L | x)`` is not independent across layers, and because ``z_L`` is drawn first, as
in the model, :class:`~pyro.infer.TraceMeanField_ELBO` computes each layer's KL analytically,
``KL(q(z_l | z_{l+1}, x) || p(z_l | z_{l+1}))`` at the sampled ``z_{l+1}``.

With ``flow="planar"`` or ``flow="iaf"`` each layer's Gaussian is pushed through ``num_flows``
amortised transforms conditioned on the same context (Rezende & Mohamed 2015, planar flows;
Kingma et al. 2016, inverse autoregressive flows), built from Pyro's
:func:`~pyro.distributions.transforms.conditional_planar` and
:func:`~pyro.distributions.transforms.conditional_affine_autoregressive`.

Shapes: ``x`` (data, D); each ``z_l`` ``(*outer, data, d_l)`` (leading ``outer`` dims from
vectorised particles broadcast through).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro import poutine
from pyro.nn import ConditionalAutoRegressiveNN, PyroModule
from torch import nn

from pyro_bdl.conventions import DATA_PLATE
from pyro_bdl.models.dlgm import DLGM, GaussianHead, check_architecture, expand_cat, latent_site, mlp, mlp_out_dim
from pyro_bdl.validation import check_choice, check_guide_rows, check_int, check_table

FLOWS = ("planar", "iaf")


def _conditional_flow(kind: str, dim: int, context_dim: int, hidden: Sequence[int], index: int) -> nn.Module:
    """One amortised transform; IAF number ``index`` orders its inputs forwards (even) or backwards (odd).

    The order is fixed rather than Pyro's default random permutation: it is a buffer, not a
    parameter, so a checkpoint of the param store (``fit``) could not restore a random one.
    """
    if kind == "planar":
        return T.conditional_planar(dim, context_dim, hidden_dims=list(hidden))
    if dim < 2:
        raise ValueError(f"flow='iaf' needs latent layers of at least 2 dimensions, got a layer of {dim}")
    order = torch.arange(dim) if index % 2 == 0 else torch.arange(dim - 1, -1, -1)
    made = ConditionalAutoRegressiveNN(dim, context_dim, list(hidden), permutation=order)
    return T.ConditionalAffineAutoregressive(made)


class DLGMGuide(PyroModule):
    """The amortised guide ``q(z_1 .. z_L | x)`` (see the module docstring).

    Args:
        data_dim: number of features D.
        latent_dims: ``(d_1, ..., d_L)`` as in the model.
        hidden_dims: hidden sizes of the encoders ``E_1 .. E_L`` (``E_l`` maps layer ``l - 1`` to
            layer ``l``), a flat sequence meaning the same for each; mirrors the model's ``T_l``.
        activation: nonlinearity, a key of :data:`pyro_bdl.models.dlgm.ACTIVATIONS`.
        flow: ``None`` (Gaussian), ``"planar"`` or ``"iaf"``.
        num_flows: transforms per layer when ``flow`` is set (>= 1).
        flow_hidden: hidden sizes of each transform's context network (default ``(4 * d_l,)``).
        name: prefix of the parameter names in Pyro's param store.

    Call as ``guide(x, *, obs_mask=None, num_data=None)``, the model's arguments (``x`` is
    required: the guide encodes it); missing entries (``obs_mask`` False) are fed to the
    encoder as 0 (NaN allowed there). Returns ``[z_1, ..., z_L]``.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dims: Sequence[int] = (50,),
        hidden_dims: Sequence[int] | Sequence[Sequence[int]] = ((200, 200),),
        *,
        activation: str = "tanh",
        flow: Literal["planar", "iaf"] | None = None,
        num_flows: int = 2,
        flow_hidden: Sequence[int] | None = None,
        name: str = "dlgm_guide",
    ) -> None:
        super().__init__(name)
        check_int("data_dim", data_dim)
        self.latent_dims, self.hidden_dims = check_architecture(latent_dims, hidden_dims, activation)
        check_choice("flow", flow, (None, *FLOWS))
        if flow is not None:
            check_int("num_flows", num_flows)
        self.data_dim, self.flow = data_dim, flow
        encoders, heads, flows = [], [], []
        width = data_dim
        for layer, d in enumerate(self.latent_dims, start=1):
            hidden = self.hidden_dims[layer - 1]
            encoders.append(mlp(width, hidden, None, activation))
            width = mlp_out_dim(width, hidden)
            context = width if layer == self.num_layers else width + self.latent_dims[layer]
            heads.append(GaussianHead(context, (), d, activation))
            if flow is not None:
                sizes = tuple(flow_hidden) if flow_hidden is not None else (4 * d,)
                flows.append(nn.ModuleList([_conditional_flow(flow, d, context, sizes, i) for i in range(num_flows)]))
        self.encoders = PyroModule[nn.ModuleList](encoders)
        self.heads = PyroModule[nn.ModuleList](heads)
        if flow is not None:
            # Pyro's conditional transforms cannot become PyroModules (metaclass conflict), so
            # they stay torch modules registered through pyro.module at each call.
            self.flows = nn.ModuleList(flows)

    @classmethod
    def for_model(cls, model: DLGM, **kwargs) -> DLGMGuide:
        """A guide whose sizes mirror ``model`` (same latent and hidden sizes); ``kwargs`` as for ``__init__``."""
        kwargs.setdefault("activation", model.activation_name)
        return cls(model.data_dim, model.latent_dims, model.hidden_dims, **kwargs)

    @property
    def num_layers(self) -> int:
        return len(self.latent_dims)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The bottom-up pass ``[a_1, ..., a_L]``, each ``(data, width_l)``."""
        out, a = [], x
        for encoder in self.encoders:
            a = encoder(a)
            out.append(a)
        return out

    def layer_distribution(
        self, layer: int, features: torch.Tensor, z_above: torch.Tensor | None
    ) -> dist.TorchDistribution:
        """``q(z_layer | z_{layer+1}, x)`` with event shape ``(d_layer,)``."""
        context = features if z_above is None else expand_cat(features, z_above)
        loc, scale = self.heads[layer - 1](context)
        fn = dist.Normal(loc, scale).to_event(1)
        if self.flow is None:
            return fn
        transforms = [flow.condition(context) for flow in self.flows[layer - 1]]
        return dist.TransformedDistribution(fn, transforms)

    @torch.no_grad()
    def posterior_means(self, x: torch.Tensor, num_samples: int = 64) -> list[torch.Tensor]:
        """Summaries ``[m_1, ..., m_L]`` of ``q(z | x)``, each (data, d_l), for plots.

        Gaussian guide: the top-down pass of the means, each layer's mean given the means
        above (for ``L = 1`` exactly ``E_q[z_1]``). Flow guide: the average of ``num_samples``
        vectorised draws.
        """
        x = check_table("x", x, self.data_dim)
        if self.flow is not None:
            with poutine.block(), pyro.plate("posterior_draws", num_samples, dim=-2):
                draws = self(x)
            return [z.mean(0) for z in draws]
        features, means, z = self.features(x), [None] * self.num_layers, None
        for layer in range(self.num_layers, 0, -1):
            z = self.layer_distribution(layer, features[layer - 1], z).mean
            means[layer - 1] = z
        return means

    def forward(
        self,
        x: torch.Tensor | None = None,
        *,
        obs_mask: torch.Tensor | None = None,
        num_data: int | None = None,
    ) -> list[torch.Tensor]:
        size, x = check_guide_rows(x, num_data, obs_mask, self.data_dim)
        features = self.features(x)
        if self.flow is not None:
            pyro.module(f"{self._pyro_name}.flows", self.flows, update_module_params=True)
        zs: list[torch.Tensor | None] = [None] * self.num_layers
        z = None
        with pyro.plate(DATA_PLATE, size, dim=-1):
            for layer in range(self.num_layers, 0, -1):
                z = pyro.sample(latent_site(layer), self.layer_distribution(layer, features[layer - 1], z))
                zs[layer - 1] = z
        return zs

    def extra_repr(self) -> str:
        return f"data_dim={self.data_dim}, latent_dims={self.latent_dims}, flow={self.flow!r}"
