"""Bayesian binary networks (issue 13): +-1 weights with a Bernoulli prior, a mean-field Bernoulli guide.

Generative process, for a BinaryNet-style network ``f_W`` (binary weights, sign activations,
batch norm after every layer, the last batch norm's output as logits)::

    W_l[i, j] ~ SignBernoulli(prior_logits_l[i, j])          site "net.<path>.weight", one per layer
    for n in data:  y_n ~ Categorical(logits = f_W(x_n))      site "obs" in plate "data"

The model is :class:`~pyro_bdl.bnn.BNNClassifier` over :class:`BayesBinaryMLP` or
:class:`BayesBinaryConvNet` (so the call shape, the data plate and the ``"obs"`` and ``"logits"``
sites are the package's, :mod:`pyro_bdl.conventions`). Batch norm scales and shifts are
deterministic parameters (point estimates), as in BayesBiNN.

Guide (:class:`BernoulliMeanFieldGuide`): ``q(W) = prod_ij SignBernoulli(W_ij; phi_ij)``, one
logit per weight, sampled with the straight-through relaxed estimator of
:class:`~pyro_bdl.layers.sign_bernoulli.SignBernoulli` (hard +-1 forward on the XNOR kernels,
``tanh`` relaxation backward). With ``TraceMeanField_ELBO`` the KL term is analytic::

    ELBO(phi) = E_q[ sum_n log p(y_n | x_n, W) ] - sum_ij KL(q_ij || p_ij).

Shapes: ``x`` ``(N, 784)`` (MLP) or ``(N, 1, 28, 28)`` (ConvNet); logits ``(*S, N, classes)``
with ``S`` the sample dims of the weights (``Predictive(parallel=True)``).
"""

from __future__ import annotations

import itertools

import pyro
import torch
from pyro.nn import PyroModule, PyroParam
from torch import nn

from pyro_bdl.layers.bayes_binary import BayesianBinaryConv2d, BayesianBinaryLinear, weight_sites
from pyro_bdl.layers.sign_bernoulli import SignBernoulli
from pyro_bdl.validation import check_int, check_positive


class _FlattenLeading:
    """Runs a module that takes ``(batch, *event)`` on ``(*lead, *event)`` by flattening the leading dims."""

    event_dim: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[: x.dim() - self.event_dim]
        out = super().forward(x.reshape(-1, *x.shape[x.dim() - self.event_dim :]))
        return out.reshape(*lead, *out.shape[1:])


class SampleBatchNorm1d(_FlattenLeading, PyroModule[nn.BatchNorm1d]):
    """``nn.BatchNorm1d`` over ``(*S, N, features)``: sample and data dims together form the batch."""

    event_dim = 1


class SampleBatchNorm2d(_FlattenLeading, PyroModule[nn.BatchNorm2d]):
    """``nn.BatchNorm2d`` over ``(*S, N, C, H, W)``."""

    event_dim = 3


class SampleMaxPool2d(_FlattenLeading, PyroModule[nn.MaxPool2d]):
    """``nn.MaxPool2d`` over ``(*S, N, C, H, W)``."""

    event_dim = 3


class BayesBinaryMLP(PyroModule):
    """Real input -> ``depth`` binary hidden layers -> logits; every layer a Bayesian binary linear + batch norm.

    Args:
        in_features: input width (784 by default).
        hidden: width of every hidden layer (512).
        depth: number of binary hidden layers (2).
        num_classes: number of logits (10).
        prior_probs: P(w = +1) of every weight (or per-layer tensors via the layers' ``prior_probs``).
        bn_eps: the batch norms' epsilon.
        bn_momentum: the batch norms' running-statistics momentum.

    Shapes: x (*T, N, in_features) real (pixels in [-1, 1]) -> logits (*broadcast(S, T), N, num_classes).
    """

    def __init__(self, in_features: int = 784, hidden: int = 512, depth: int = 2, num_classes: int = 10, *,
                 prior_probs: float = 0.5, bn_eps: float = 1e-4, bn_momentum: float = 0.1) -> None:  # fmt: skip
        super().__init__()
        for name, value in (("in_features", in_features), ("hidden", hidden), ("depth", depth)):
            check_int(name, value)
        check_int("num_classes", num_classes, 2)
        widths = [in_features] + [hidden] * depth + [num_classes]
        self.in_features, self.hidden, self.depth, self.num_classes = in_features, hidden, depth, num_classes
        self.layers = PyroModule[nn.ModuleList](
            BayesianBinaryLinear(fan_in, fan_out, binarize_input=index > 0, prior_probs=prior_probs)
            for index, (fan_in, fan_out) in enumerate(itertools.pairwise(widths))
        )
        self.norms = PyroModule[nn.ModuleList](
            SampleBatchNorm1d(width, eps=bn_eps, momentum=bn_momentum) for width in widths[1:]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer, norm in zip(self.layers, self.norms, strict=True):
            h = norm(layer(h))
        return h


class BayesBinaryConvNet(PyroModule):
    """A small BinaryNet-style ConvNet of Bayesian binary layers, for 28 x 28 images.

    ``(C 3x3 BN) - (2C 3x3 MP2 BN) - (2C 3x3 MP2 BN) - (hidden BN) - (classes BN)``; the first
    convolution takes real pixels. ``blocks`` is a sequence in the pattern that
    :func:`~pyro_bdl.networks.export_packed_convnet` reads, so the posterior mode exports to it.

    Shapes: x (*T, N, in_channels, 28, 28) -> logits (*broadcast(S, T), N, num_classes).
    """

    def __init__(self, in_channels: int = 1, width: int = 32, hidden: int = 256, num_classes: int = 10,
                 image_size: int = 28, *, prior_probs: float = 0.5, bn_eps: float = 1e-4) -> None:  # fmt: skip
        super().__init__()
        for name, value in (("in_channels", in_channels), ("width", width), ("hidden", hidden)):
            check_int(name, value)
        check_int("num_classes", num_classes, 2)
        if check_int("image_size", image_size) % 4:
            raise ValueError(f"image_size must be divisible by 4 (two 2x2 pools), got {image_size}")
        self.in_channels = in_channels
        blocks: list[nn.Module] = []
        channels = in_channels
        for index, (out_channels, pool) in enumerate(((width, False), (2 * width, True), (2 * width, True))):
            blocks.append(BayesianBinaryConv2d(channels, out_channels, 3, padding=1, binarize_input=index > 0,
                                               prior_probs=prior_probs))  # fmt: skip
            if pool:
                blocks.append(SampleMaxPool2d(2))
            blocks.append(SampleBatchNorm2d(out_channels, eps=bn_eps))
            channels = out_channels
        features = channels * (image_size // 4) ** 2
        blocks += [
            nn.Flatten(-3),
            BayesianBinaryLinear(features, hidden, prior_probs=prior_probs),
            SampleBatchNorm1d(hidden, eps=bn_eps),
            BayesianBinaryLinear(hidden, num_classes, prior_probs=prior_probs),
            SampleBatchNorm1d(num_classes, eps=bn_eps),
        ]
        self.blocks = PyroModule[nn.Sequential](*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def _attribute(site: str) -> str:
    return site.replace(".", "__")


class BernoulliMeanFieldGuide(PyroModule):
    """Mean-field guide ``q(W) = prod SignBernoulli(W_ij; phi_ij)`` over the weight sites of a Bayesian binary model.

    Args:
        model: the root ``PyroModule`` that is run (e.g. ``BNNClassifier(BayesBinaryMLP())``);
            its Bayesian binary layers' weight sites get one logit each.
        temperature: of the straight-through relaxed sample (module docstring of
            :mod:`~pyro_bdl.layers.sign_bernoulli`); gradients scale as ``1 / temperature``
            near the decision boundary. ``None``: plain (non-reparameterised) draws, for the
            unbiased score-function gradients of ``Trace_ELBO`` (high variance; small models).
        estimator: ``"relaxed"`` (the Gumbel-softmax straight-through sample at ``temperature``)
            or ``"mean"`` (BayesBiNN's estimator as its code runs it: the gradient of the hard
            sample flows through ``mu = tanh(phi / 2)``; ``temperature`` unused).
        init_logit_scale: initial logits uniform in ``[-scale, scale]`` (BinaryNet's latent
            weights start uniform in [-1, 1]); ignored for sites in ``init_logits``.
        init_logits: ``{site: logits}`` to start from, e.g. a pretrained BinaryNet's
            ``c * sign(weight)``.

    Calling the guide with the model's arguments samples every weight site and returns
    ``{site: +-1 weights}``. Logits are Pyro params named ``"logits.<site with . -> __>"``.
    """

    def __init__(self, model: nn.Module, *, temperature: float | None = 1.0, estimator: str = "relaxed",
                 init_logit_scale: float = 1.0,
                 init_logits: dict[str, torch.Tensor] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.temperature = check_positive("temperature", temperature, allow_none=True)
        self.estimator = SignBernoulli(torch.zeros(()), estimator=estimator).estimator  # checks the name
        check_positive("init_logit_scale", init_logit_scale)
        sites = weight_sites(model)
        if not sites:
            raise ValueError("model has no Bayesian binary layers (BayesianBinaryLinear / BayesianBinaryConv2d)")
        init_logits = dict(init_logits or {})
        unknown = sorted(set(init_logits) - set(sites))
        if unknown:
            raise ValueError(f"init_logits names sites the model does not have: {unknown}; sites: {sorted(sites)}")
        self.sites = {site: layer.weight_shape for site, layer in sites.items()}
        self._layers = dict(sites)  # a plain dict: the model's layers are not the guide's submodules
        self.logits = PyroModule()
        for site, layer in sites.items():
            if site in init_logits:
                value = init_logits[site].detach().float()
                if value.shape != layer.weight_shape:
                    raise ValueError(f"init_logits[{site!r}] must have shape {tuple(layer.weight_shape)}, "
                                     f"got {tuple(value.shape)}")  # fmt: skip
            else:
                value = (torch.rand(layer.weight_shape) * 2 - 1) * init_logit_scale
            setattr(self.logits, _attribute(site), PyroParam(value.to(layer.prior_logits.device)))

    def site_logits(self, site: str) -> torch.Tensor:
        """The variational logits of ``site``, (*weight shape)."""
        return getattr(self.logits, _attribute(site))

    def distribution(self, site: str, temperature: float | None = None, estimator: str = "relaxed") -> SignBernoulli:
        """q of ``site``'s weights, batch shape the weight's shape; with the defaults it samples without gradients."""
        return SignBernoulli(self.site_logits(site), temperature, estimator=estimator)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, *,
                obs_mask: torch.Tensor | None = None, num_data: int | None = None) -> dict:  # fmt: skip
        """Sample every weight site (the arguments are the model's, unused); returns ``{site: +-1 weights}``."""
        return {
            site: pyro.sample(site, self.distribution(site, self.temperature, self.estimator).to_event(len(shape)))
            for site, shape in self.sites.items()
        }

    @torch.no_grad()
    def mode(self) -> dict[str, torch.Tensor]:
        """``{site: sign(logits)}``, the most probable weights under q (ties to +1)."""
        return {site: self.distribution(site).mode for site in self.sites}

    @torch.no_grad()
    def sample_weights(self, num_samples: int) -> dict[str, torch.Tensor]:
        """``{site: (num_samples, *weight shape) +-1 draws}`` from q, without gradients."""
        check_int("num_samples", num_samples)
        return {site: self.distribution(site).sample((num_samples,)) for site in self.sites}

    def by_layer(self, draws: dict[str, torch.Tensor], layers) -> list[torch.Tensor]:
        """``draws[site]`` for each of ``layers`` (Bayesian binary layers of the guide's model), in their order."""
        site_of = {id(layer): site for site, layer in self._layers.items()}
        missing = [type(layer).__name__ for layer in layers if id(layer) not in site_of]
        if missing:
            raise ValueError(f"{len(missing)} of the layers do not belong to the model this guide was built for")
        return [draws[site_of[id(layer)]] for layer in layers]


__all__ = [
    "BayesBinaryConvNet",
    "BayesBinaryMLP",
    "BernoulliMeanFieldGuide",
    "SampleBatchNorm1d",
    "SampleBatchNorm2d",
    "SampleMaxPool2d",
]
