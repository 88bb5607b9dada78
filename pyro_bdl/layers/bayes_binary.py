"""Bayesian binary layers: +-1 weights that are latent ``pyro.sample`` sites (issue 13).

``BayesianBinaryLinear`` and ``BayesianBinaryConv2d`` are :class:`~pyro_bdl.layers.BinaryLinear`
and :class:`~pyro_bdl.layers.BinaryConv2d` whose ``weight`` is a ``PyroSample`` with the prior

    w_ij ~ SignBernoulli(prior_logits_ij)     i.e. P(w_ij = +1) = prior_probs_ij,

one site named after the module path (``"<path>.weight"``) with the weight's full shape as its
event shape. ``prior_probs`` is a probability (0.5 by default: the uniform prior over sign
patterns) or a tensor of the weight's shape, e.g. :func:`sign_prior_probs` of a pretrained
BinaryNet's latent weights. The bias, if any, stays a deterministic parameter (a point estimate
in the Pyro param store), as do the batch norms of the networks built from these layers.

Forward, as in BinaryNet: the input is binarised with ``sign`` (unless ``binarize_input=False``,
the first layer), and:

* weights without sample dims (training with one particle, a single network): the product of
  the packed signs on :func:`triton_kernels.xnor_gemm` (the binary layers' autograd function;
  gradients reach the +-1 weights as the float product ``grad^T sign(x)``, and from there the
  logits through the relaxed sample of the guide);
* weights with sample dims ``(*S, 1, out, in)`` (``Predictive(parallel=True)``, vectorised
  particles) and no gradient needed: every sample's weights packed and all ``S`` networks in
  one batched XNOR call (:func:`stacked_xnor_linear`);
* with sample dims and gradients: the float product of the same +-1 operands (equal exactly:
  sums of +-1 are exact in float32 below 2^24 terms).

Shapes: linear ``(*T, N, in) -> (*broadcast(S, T), N, out)``; conv ``(*T, N, C, H, W) ->
(*broadcast(S, T), N, C_out, H', W')``, see :mod:`pyro_bdl.layers.functional`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from pyro.nn import PyroModule, PyroSample
from torch import nn

from pyro_bdl.kernels import conv_weight_words, pack_signs, xnor_gemm
from pyro_bdl.layers import functional
from pyro_bdl.layers.bayesian import align_to_plates
from pyro_bdl.layers.binary import (
    BinaryConv2d,
    BinaryLinear,
    _BinaryConv2dFunction,
    _BinaryLinearFunction,
    sign_ste,
)
from pyro_bdl.layers.sign_bernoulli import SignBernoulli


def sign_prior_probs(weight: torch.Tensor, confidence: float) -> torch.Tensor:
    """A prior centred on the signs of ``weight``: P(w = +1) = ``confidence`` where ``weight >= 0``, else 1 - it.

    Args:
        weight: any shape, e.g. a pretrained :class:`~pyro_bdl.layers.BinaryLinear`'s latent weights.
        confidence: in (0.5, 1): how strongly the prior believes the pretrained signs.
    """
    if not 0.5 < float(confidence) < 1.0:
        raise ValueError(f"confidence must lie in (0.5, 1), got {confidence!r}")
    return torch.where(weight.detach() >= 0, float(confidence), 1.0 - float(confidence)).float()


def _prior_logits(prior_probs: float | torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if isinstance(prior_probs, torch.Tensor):
        if prior_probs.shape != shape:
            raise ValueError(f"prior_probs must be a float or a tensor of the weight's shape {tuple(shape)}, "
                             f"got shape {tuple(prior_probs.shape)}")  # fmt: skip
        if not bool(((prior_probs > 0) & (prior_probs < 1)).all()):
            raise ValueError("prior_probs must lie strictly between 0 and 1 everywhere")
        return torch.logit(prior_probs.detach().float())
    if isinstance(prior_probs, bool) or not isinstance(prior_probs, int | float) or not 0 < prior_probs < 1:
        raise ValueError(f"prior_probs must be a probability in (0, 1) or a tensor of them, got {prior_probs!r}")
    return torch.full(shape, float(torch.logit(torch.tensor(float(prior_probs)))))


def _weight_prior(module: BayesianBinaryLayer) -> SignBernoulli:
    logits = module.prior_logits
    return SignBernoulli(logits).to_event(logits.dim())


class BayesianBinaryLayer:
    """Mixin: replaces the binary layer's latent ``weight`` parameter by a ``SignBernoulli`` ``PyroSample``."""

    prior_logits: torch.Tensor

    def _make_bayesian_binary(self, prior_probs: float | torch.Tensor) -> None:
        weight = self.weight
        self.weight_shape = weight.shape
        self.register_buffer("prior_logits", _prior_logits(prior_probs, weight.shape).to(weight.device))
        del self.weight
        self.weight = PyroSample(_weight_prior)

    def sampled_weight(self) -> torch.Tensor:
        """This forward pass's +-1 weights, ``(*shape)`` or ``(*S, 1, *shape)`` (sample dims aligned to the plates)."""
        return align_to_plates(self.weight, len(self.weight_shape))

    def prior(self) -> SignBernoulli:
        """The weights' prior, batch shape = the weight's shape."""
        return SignBernoulli(self.prior_logits)


def _stack_samples(weight: torch.Tensor, event_dim: int) -> tuple[torch.Size, torch.Tensor]:
    """(*S, 1, *event) -> (S, (P, *event)): the sample dims and the weights of every sample stacked."""
    sample = functional._sample_dims("weight", weight, event_dim)
    return sample, weight.reshape(-1, *weight.shape[-event_dim:])


def stacked_xnor_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``sign(x) @ w_s^T (+ bias)`` for every weight sample ``s`` on the XNOR kernel, without gradients.

    Args:
        x: (*T, N, in) real; binarised here with ``sign``.
        weight: (*S, 1, out, in) +-1 weights (layout of :mod:`pyro_bdl.layers.functional`).
        bias: (out,) or None.

    Returns:
        (*broadcast(S, T), N, out) in x's dtype: for each of the P = prod(S) samples the exact
        integer product, from one batched ``xnor_gemm`` over the stacked packed weights.
    """
    sample, stacked = _stack_samples(weight, 2)
    lead = x.shape[:-2]
    batch = torch.broadcast_shapes(sample, lead)
    xs = x.expand(*batch, *x.shape[-2:]).reshape(-1, *x.shape[-2:])
    words = pack_signs(stacked, check_nan=False)  # (P, out, KW)
    a = pack_signs(xs.detach(), check_nan=False)  # (P', N, KW)
    if a.shape[0] != words.shape[0]:  # sample dims broadcast against data dims
        event = words.shape[-2:]
        words = words.reshape(*sample, *event).expand(*batch, *event).reshape(-1, *event)
    out = batched_xnor_gemm(a, words, x.shape[-1]).to(x.dtype)
    out = out.reshape(*batch, *out.shape[-2:])
    return out if bias is None else out + bias


def batched_xnor_gemm(a: torch.Tensor, b: torch.Tensor, k: int, **options) -> torch.Tensor:
    """(P, N, KW) x (P, out, KW) sign words -> (P, N, out): P binary products in one kernel call.

    ``options`` are :func:`triton_kernels.xnor_gemm`'s (``scale``/``bias`` (out,) shared by the
    P products or (P, out), one per product; ``out_dtype``, ``pack_output``).
    """
    if b.dim() != 3 or a.dim() != 3 or a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must be (P, N, KW) and (P, out, KW), got {tuple(a.shape)} and {tuple(b.shape)}")
    return xnor_gemm(a, b, k, **options)


class BayesianBinaryLinear(BayesianBinaryLayer, PyroModule[BinaryLinear]):
    """:class:`~pyro_bdl.layers.BinaryLinear` with a ``SignBernoulli`` prior on its weight ``(out, in)``.

    The positional arguments (``in_features, out_features, bias, binarize_input, device, dtype``)
    are ``BinaryLinear``'s; the bias, default off, is a deterministic parameter.

    Args:
        prior_probs: P(w = +1), a float in (0, 1) or a tensor of the weight's shape.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, binarize_input: bool = True,
                 device=None, dtype=None, *, prior_probs: float | torch.Tensor = 0.5) -> None:  # fmt: skip
        super().__init__(in_features, out_features, bias, binarize_input, device, dtype)
        self._make_bayesian_binary(prior_probs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(f"input must be (..., {self.in_features}), got {tuple(x.shape)}")
        weight = self.sampled_weight()
        if not self.binarize_input:
            return functional.linear(x, weight, self.bias)
        if weight.dim() == 2:
            out = _BinaryLinearFunction.apply(x, weight, pack_signs(weight.detach(), check_nan=False))
            return out if self.bias is None else out + self.bias
        if torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad):
            return functional.linear(sign_ste(x), weight, self.bias)
        return stacked_xnor_linear(x, weight, self.bias)


class BayesianBinaryConv2d(BayesianBinaryLayer, PyroModule[BinaryConv2d]):
    """:class:`~pyro_bdl.layers.BinaryConv2d` with a ``SignBernoulli`` prior on its weight (C_out, C_in / g, kh, kw).

    The positional arguments (``in_channels`` to ``dtype``) are ``BinaryConv2d``'s (bias default off).

    Args:
        prior_probs: P(w = +1), a float in (0, 1) or a tensor of the weight's shape.

    Binarised inputs are padded with +1, as in ``BinaryConv2d``; real inputs with 0.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = False, binarize_input: bool = True, device=None, dtype=None, *,
                 prior_probs: float | torch.Tensor = 0.5) -> None:  # fmt: skip
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         binarize_input, device, dtype)  # fmt: skip
        self._make_bayesian_binary(prior_probs)

    def _conv_options(self, padding) -> dict:
        return {"stride": self.stride, "padding": padding, "dilation": self.dilation, "groups": self.groups}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 4 or x.shape[-3] != self.in_channels:
            raise ValueError(f"input must be (..., batch, {self.in_channels}, height, width), got {tuple(x.shape)}")
        weight = self.sampled_weight()
        bias = self.bias
        if not self.binarize_input:
            return functional.conv(x, weight, bias, spatial_ndim=2, **self._conv_options(self.padding))
        if weight.dim() == 4 and x.dim() == 4:
            words = conv_weight_words(weight.detach(), self.groups)
            out = _BinaryConv2dFunction.apply(x, weight, words, self._geometry())
            return out if bias is None else out + bias.view(-1, 1, 1)
        ph, pw = self.padding
        signs = F.pad(sign_ste(x), (pw, pw, ph, ph), value=1.0)  # +1 padding of the binarised input
        return functional.conv(signs, weight, bias, spatial_ndim=2, **self._conv_options(0))


BAYESIAN_BINARY_LAYERS = (BayesianBinaryLinear, BayesianBinaryConv2d)


def bayesian_binary_layers(module: nn.Module) -> Iterator[tuple[str, BayesianBinaryLayer]]:
    """``(qualified name, layer)`` for every Bayesian binary layer inside ``module`` (itself included)."""
    for name, sub in module.named_modules():
        if isinstance(sub, BAYESIAN_BINARY_LAYERS):
            yield name, sub


def weight_sites(module: nn.Module) -> dict[str, BayesianBinaryLayer]:
    """``{site name: layer}``: the weight sites of ``module``'s Bayesian binary layers when it is the root run."""
    return {f"{name}.weight" if name else "weight": layer for name, layer in bayesian_binary_layers(module)}


__all__ = [
    "BAYESIAN_BINARY_LAYERS",
    "BayesianBinaryConv2d",
    "BayesianBinaryLayer",
    "BayesianBinaryLinear",
    "batched_xnor_gemm",
    "bayesian_binary_layers",
    "sign_prior_probs",
    "stacked_xnor_linear",
    "weight_sites",
]
