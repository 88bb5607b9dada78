"""Bayesian linear and convolution layers: ``PyroModule[nn.X]`` whose weight and bias are ``PyroSample`` sites.

Each ``Bayesian<TorchName>`` takes the torch constructor's arguments plus a keyword-only
``prior`` (default ``GaussianPrior(1.0)``). Its ``weight`` and ``bias`` are latent sites
named after the module path (``"<path>.weight"``, ``"<path>.bias"``), each one site with the
parameter's full shape as event shape. The deterministic layer's default initialisation is
kept as the buffers ``weight_init`` and ``bias_init`` (not saved in ``state_dict``): the
guides of :mod:`pyro_bdl.bnn.guides` start their means there.

Shapes (``S`` = sample dims from outer plates, see :mod:`pyro_bdl.layers.functional`):

* ``BayesianLinear``: input ``(*T, N, in_features)`` -> ``(*broadcast(S, T), N, out_features)``.
* ``BayesianConv{1,2,3}d``: input ``(*T, N, C_in, *spatial)`` -> ``(*broadcast(S, T), N, C_out, *spatial_out)``.

With a weight drawn at its mean and zero variance a layer is its deterministic twin.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from pyro.nn import PyroModule, PyroSample
from pyro.poutine.runtime import get_plates
from torch import nn

from pyro_bdl.layers.priors import GaussianPrior, Prior
from pyro_bdl.layers.reparameterization import reparameterized_conv, reparameterized_linear

_PARAM_NAMES = ("weight", "bias")


def align_to_plates(value: torch.Tensor, event_dim: int) -> torch.Tensor:
    """A global site's value with its sample dims aligned to the enclosing vectorised plates.

    ``Predictive(parallel=True)`` conditions a site whose event has more dims than there are
    plates on a value ``(num_samples, *event)``, without the size-1 dims that would put
    ``num_samples`` at its plate's dim; those dims are restored here. A value without sample
    dims, or already aligned, is returned as is.
    """
    batch = value.shape[: value.dim() - event_dim]
    if not batch or batch[-1] == 1:  # no sample dims, or already outside a data dim of size 1
        return value
    frames = [frame for frame in get_plates() if frame.vectorized and frame.dim is not None]
    if not frames:
        return value
    expected = [1] * max(-frame.dim for frame in frames)
    for frame in frames:
        expected[len(expected) + frame.dim] = frame.size
    if tuple(batch) != tuple(expected) and tuple(batch) == tuple(size for size in expected if size != 1):
        value = value.reshape(*expected, *value.shape[len(batch) :])
    return value


class BayesianLayer:
    """Mixin of the Bayesian layers: turns the module's ``weight``/``bias`` into ``PyroSample`` priors."""

    prior: Prior

    def _make_bayesian(self, prior: Prior | None) -> None:
        prior = GaussianPrior(1.0) if prior is None else prior
        if not isinstance(prior, Prior):
            raise TypeError(
                f"prior must be a pyro_bdl.layers.Prior (e.g. GaussianPrior(1.0)), got {type(prior).__name__}"
            )
        self.prior = prior
        for name in _PARAM_NAMES:
            value = getattr(self, name, None)
            if value is None:
                continue
            self.register_buffer(f"{name}_init", value.detach().clone(), persistent=False)
            delattr(self, name)
            setattr(self, name, PyroSample(_LayerPrior(name)))

    def sampled(self, name: str) -> torch.Tensor | None:
        """The value of site ``name`` (``"weight"``/``"bias"``) in this forward pass, sample dims aligned to the plates.

        ``Predictive(parallel=True)`` conditions a site whose event has more dims than there
        are plates on a value ``(num_samples, *event)``, without the size-1 dims that would put
        ``num_samples`` at its plate's dim; those dims are restored here.
        """
        value = getattr(self, name)
        if value is None:
            return None
        return align_to_plates(value, getattr(self, f"{name}_init").dim())

    def initial_values(self) -> dict[str, torch.Tensor]:
        """The deterministic initialisation, ``{"weight": ..., "bias": ...}`` (bias only if the layer has one)."""
        return {name: getattr(self, f"{name}_init") for name in _PARAM_NAMES if hasattr(self, f"{name}_init")}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, prior={self.prior!r}"


class _LayerPrior:
    """The ``PyroSample`` prior of a layer's parameter ``name``: built on its shape, dtype and device when drawn."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, module: BayesianLayer):
        reference = getattr(module, f"{self.name}_init")
        return module.prior.distribution(reference.shape, dtype=reference.dtype, device=reference.device)


class BayesianLinear(BayesianLayer, PyroModule[nn.Linear]):
    """``nn.Linear`` with priors on weight ``(out_features, in_features)`` and bias ``(out_features,)``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 prior: Prior | None = None) -> None:  # fmt: skip
        super().__init__(in_features, out_features, bias, device, dtype)
        self._make_bayesian(prior)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.shape[-1:] != (self.in_features,):
            raise ValueError(f"input must be (..., {self.in_features}), got {tuple(input.shape)}")
        return reparameterized_linear(input, self.sampled("weight"), self.sampled("bias"))


class _BayesianConvNd(BayesianLayer):
    """The constructor and forward shared by the Bayesian convolutions; ``nn.ConvNd`` follows in the MRO."""

    spatial_ndim: int

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None, *,
                 prior: Prior | None = None) -> None:  # fmt: skip
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                         device, dtype)  # fmt: skip
        if self.padding_mode != "zeros":
            raise ValueError(f"padding_mode must be 'zeros' for Bayesian convolutions, got {self.padding_mode!r}")
        self._make_bayesian(prior)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        channel_dim = -self.spatial_ndim - 1
        if input.dim() < self.spatial_ndim + 1 or input.shape[channel_dim] != self.in_channels:
            raise ValueError(
                f"input must be (..., {self.in_channels}, {', '.join(['*'] * self.spatial_ndim)}), "
                f"got {tuple(input.shape)}"
            )
        if input.dim() == self.spatial_ndim + 1:  # unbatched, as nn.Conv accepts
            return self.forward(input.unsqueeze(0)).squeeze(-self.spatial_ndim - 2)
        return reparameterized_conv(
            input, self.sampled("weight"), self.sampled("bias"), spatial_ndim=self.spatial_ndim, stride=self.stride,
            padding=self.padding, dilation=self.dilation, groups=self.groups,
        )  # fmt: skip


class BayesianConv1d(_BayesianConvNd, PyroModule[nn.Conv1d]):
    """``nn.Conv1d`` with priors on weight ``(C_out, C_in / groups, k)`` and bias ``(C_out,)``."""

    spatial_ndim = 1


class BayesianConv2d(_BayesianConvNd, PyroModule[nn.Conv2d]):
    """``nn.Conv2d`` with priors on weight ``(C_out, C_in / groups, kh, kw)`` and bias ``(C_out,)``."""

    spatial_ndim = 2


class BayesianConv3d(_BayesianConvNd, PyroModule[nn.Conv3d]):
    """``nn.Conv3d`` with priors on weight ``(C_out, C_in / groups, kd, kh, kw)`` and bias ``(C_out,)``."""

    spatial_ndim = 3


BAYESIAN_TWINS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: BayesianLinear,
    nn.Conv1d: BayesianConv1d,
    nn.Conv2d: BayesianConv2d,
    nn.Conv3d: BayesianConv3d,
}
"""The torch layer types that have a Bayesian twin, and the twin."""


def bayesian_layers(module: nn.Module) -> Iterator[tuple[str, BayesianLayer]]:
    """``(qualified name, layer)`` for every Bayesian layer inside ``module`` (itself included)."""
    for name, sub in module.named_modules():
        if isinstance(sub, BayesianLayer):
            yield name, sub
