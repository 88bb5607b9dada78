"""Lower-variance gradient estimators for mean-field Gaussian guides: local reparameterisation and flipout.

With a guide ``q(W) = prod N(w_ij | mu_ij, sigma_ij^2)``, a layer ``h = x W^T + b`` can be
evaluated without one shared weight draw for the whole minibatch:

* **Local reparameterisation** (Kingma, Salimans & Welling 2015, "Variational dropout and the
  local reparameterization trick"): each pre-activation is Gaussian given ``x``, so draw it
  directly, independently per example::

      h = x mu^T + sqrt(x^2 (sigma^2)^T) * eps,   eps ~ N(0, I)   (+ the bias' mean and variance)

* **Flipout** (Wen, Vicol, Ba, Tran & Grosse 2018): one draw ``W = mu + Delta``, decorrelated
  across examples by random signs ``s_in`` (per input feature or channel) and ``s_out``
  (per output feature or channel)::

      h = x mu^T + ((x * s_in) Delta^T) * s_out + b

For each example the distribution of ``h`` is exactly that of plain weight sampling, so the
expected log-likelihood (a sum of per-example terms) and the ELBO are unchanged; only the
estimator's variance falls, because examples no longer share one noise draw. The prior and
guide densities of a weight site are still scored at its sampled value, which the likelihood
no longer sees: use the wrapped pair for the ELBO (SVI, ``fit``), the plain pair for
importance weights of single weight draws.

Design: :meth:`Reparameterization.wrap` returns ``(model, guide)`` wrapped in two handlers of
one shared state. The guide's handler records every weight drawn from a Normal (also through
an ``AutoNormal``'s identity-transformed ``Delta``), keyed by the identity of the drawn
tensor. The model's handler replays those tensors; inside it, ``F.linear`` and
``F.conv{1,2,3}d`` (intercepted with a ``TorchFunctionMode``, so plain
``PyroModule[nn.Linear]`` layers work too) and our Bayesian layers evaluate a recorded
weight with the estimator. Anything else (weights from a ``Delta``/MAP guide, prior draws,
conditioned samples in ``Predictive``) runs unchanged.

Scope: local reparameterisation applies to linear layers only. For a convolution it would
draw every output *pixel* independently, which matches each pixel's marginal but not the
joint distribution of one example's feature map under a shared kernel, so the next layer
would see a different distribution; convolutions keep plain sampling there. Flipout's signs
are per channel, so it is exact for both. Both assume a weight is used once per forward
pass and that rows of the linear input are examples.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.poutine.messenger import Messenger
from torch.overrides import TorchFunctionMode

from pyro_bdl.layers import functional

_ACTIVE: list[Reparameterization] = []
_CONV_NDIM = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


@dataclass(frozen=True)
class _Record:
    """A weight draw from ``Normal(loc, scale)``: a weak reference to the drawn tensor and its parameters."""

    ref: weakref.ref
    loc: torch.Tensor
    scale: torch.Tensor


def _base_distribution(fn) -> dist.Distribution:
    while isinstance(fn, dist.Independent | torch.distributions.Independent):
        fn = fn.base_dist
    return fn


def _compact(t: torch.Tensor, like: torch.Tensor, event_ndim: int) -> torch.Tensor:
    """``t`` broadcast to ``like``'s shape, but with sample dims that only repeat (stride 0) kept at size 1.

    A guide's ``loc``/``scale`` reach a vectorised plate expanded to ``(P, 1, *event)``;
    evaluating the mean once instead of P times gives the same result, broadcast later.
    """
    t = t.expand_as(like)
    sample_ndim = t.dim() - event_ndim
    index = tuple(
        slice(0, 1) if i < sample_ndim and stride == 0 else slice(None) for i, stride in enumerate(t.stride())
    )
    return t[index]


def _random_signs(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    return torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(0.5).mul_(2.0).sub_(1.0)


class Reparameterization:
    """Shared state of a (model, guide) pair evaluated with a lower-variance estimator.

    Subclasses implement :meth:`linear` (and :meth:`conv`, which defaults to plain sampling).
    """

    def __init__(self) -> None:
        self._records: dict[int, _Record] = {}

    def wrap(self, model: Callable, guide: Callable) -> tuple[Callable, Callable]:
        """``(model, guide)`` wrapped so that weights the guide draws from a Normal use this estimator.

        Use the returned pair everywhere the originals were used (``SVI``, ``fit``,
        ``Predictive``); the original modules keep their parameters and ``train``/``eval``.
        """
        return _ApplyInModel(self)(model), _RecordInGuide(self)(guide)

    # --- records ---------------------------------------------------------------------------

    def _record_site(self, msg: dict) -> None:
        value = msg["value"]
        if msg["type"] != "sample" or msg["is_observed"] or not isinstance(value, torch.Tensor):
            return
        base = _base_distribution(msg["fn"])
        if isinstance(base, torch.distributions.Normal):
            self._remember(value, base.loc, base.scale)
        elif isinstance(base, dist.Delta):
            # AutoNormal draws an auxiliary "<name>_unconstrained" Normal site and returns its
            # (here identity-transformed) draw through a Delta at "<name>".
            source = self.lookup(base.v)
            if source is not None:
                self._remember(value, source.loc, source.scale)

    def _remember(self, value: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> None:
        key = id(value)
        ref = weakref.ref(value, partial(self._forget, key))
        self._records[key] = _Record(ref, loc, scale)

    def _forget(self, key: int, ref: weakref.ref) -> None:
        record = self._records.get(key)
        if record is not None and record.ref is ref:
            del self._records[key]

    def lookup(self, tensor: torch.Tensor | None) -> _Record | None:
        """The record of ``tensor`` if the guide drew exactly this tensor from a Normal, else ``None``."""
        if tensor is None:
            return None
        record = self._records.get(id(tensor))
        if record is None or record.ref() is not tensor:
            return None
        return record

    # --- estimators ------------------------------------------------------------------------

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
        """The layer output under this estimator, or ``None`` to sample plainly (weight not recorded)."""
        raise NotImplementedError

    def conv(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, spatial_ndim: int, **conv_args
    ) -> torch.Tensor | None:
        """As :meth:`linear` for an N-d convolution (``conv_args``: stride, padding, dilation, groups)."""
        return None


class LocalReparameterization(Reparameterization):
    """Local reparameterisation trick (Kingma, Salimans & Welling 2015) for linear layers; module docstring."""

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
        w = self.lookup(weight)
        if w is None:
            return None
        loc, scale = (_compact(t, weight, 2) for t in (w.loc, w.scale))
        b = self.lookup(bias)
        if b is None:
            mean = functional.linear(x, loc, bias)
            var = functional.linear(x.square(), scale.square())
        else:
            mean = functional.linear(x, loc, _compact(b.loc, bias, 1))
            var = functional.linear(x.square(), scale.square(), _compact(b.scale, bias, 1).square())
        std = var.clamp_min(torch.finfo(var.dtype).tiny).sqrt()
        # one draw per sample of the weight: its sample dims (left of the data dim) lead the output
        shape = torch.broadcast_shapes(mean.shape, (*weight.shape[:-3], 1, 1)) if weight.dim() > 2 else mean.shape
        return mean + std * torch.randn(shape, dtype=mean.dtype, device=mean.device)


class Flipout(Reparameterization):
    """Flipout (Wen et al. 2018) for linear and convolution layers; module docstring."""

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
        w = self.lookup(weight)
        if w is None:
            return None
        loc = _compact(w.loc, weight, 2)
        mean = functional.linear(x, loc, bias)
        perturbation = functional.linear(x * _random_signs(x.shape, x), weight - loc)
        return mean + perturbation * _random_signs(perturbation.shape, perturbation)

    def conv(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, spatial_ndim: int, **conv_args
    ) -> torch.Tensor | None:
        w = self.lookup(weight)
        if w is None:
            return None
        loc = _compact(w.loc, weight, spatial_ndim + 2)
        per_channel = (1,) * spatial_ndim
        mean = functional.conv(x, loc, bias, spatial_ndim=spatial_ndim, **conv_args)
        s_in = _random_signs(x.shape[:-spatial_ndim] + per_channel, x)
        perturbation = functional.conv(x * s_in, weight - loc, spatial_ndim=spatial_ndim, **conv_args)
        s_out = _random_signs(perturbation.shape[:-spatial_ndim] + per_channel, perturbation)
        return mean + perturbation * s_out


def local_reparameterization(model: Callable, guide: Callable) -> tuple[Callable, Callable]:
    """``LocalReparameterization().wrap(model, guide)``."""
    return LocalReparameterization().wrap(model, guide)


def flipout(model: Callable, guide: Callable) -> tuple[Callable, Callable]:
    """``Flipout().wrap(model, guide)``."""
    return Flipout().wrap(model, guide)


def active_reparameterization() -> Reparameterization | None:
    """The estimator of the innermost wrapped model being run, or ``None``."""
    return _ACTIVE[-1] if _ACTIVE else None


def reparameterized_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """:func:`functional.linear` under the active estimator, if any (used by the Bayesian layers)."""
    owner = active_reparameterization()
    out = owner.linear(x, weight, bias) if owner is not None else None
    return functional.linear(x, weight, bias) if out is None else out


def reparameterized_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, spatial_ndim: int, **conv_args
) -> torch.Tensor:
    """:func:`functional.conv` under the active estimator, if any (used by the Bayesian layers)."""
    owner = active_reparameterization()
    out = owner.conv(x, weight, bias, spatial_ndim=spatial_ndim, **conv_args) if owner is not None else None
    return functional.conv(x, weight, bias, spatial_ndim=spatial_ndim, **conv_args) if out is None else out


class _RecordInGuide(Messenger):
    """Wraps the guide: records its Normal weight draws in the shared state."""

    def __init__(self, owner: Reparameterization) -> None:
        super().__init__()
        self.owner = owner

    def _pyro_post_sample(self, msg: dict) -> None:
        self.owner._record_site(msg)


class _InterceptTorch(TorchFunctionMode):
    """Routes ``F.linear`` / ``F.conv{1,2,3}d`` on recorded weights to the estimator."""

    def __init__(self, owner: Reparameterization) -> None:
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = None
        if func is F.linear:
            bound = dict(zip(("input", "weight", "bias"), args, strict=False)) | kwargs
            out = self.owner.linear(bound["input"], bound["weight"], bound.get("bias"))
        elif func in _CONV_NDIM:
            bound = dict(zip(_CONV_ARGS, args, strict=False)) | kwargs
            conv_args = {key: bound[key] for key in _CONV_ARGS[3:] if key in bound}
            out = self.owner.conv(
                bound["input"], bound["weight"], bound.get("bias"), spatial_ndim=_CONV_NDIM[func], **conv_args
            )
        return func(*args, **kwargs) if out is None else out


class _ApplyInModel(Messenger):
    """Wraps the model: makes the shared state the active estimator while it runs."""

    def __init__(self, owner: Reparameterization) -> None:
        super().__init__()
        self.owner = owner
        self._modes: list[_InterceptTorch] = []

    def __enter__(self):
        _ACTIVE.append(self.owner)
        mode = _InterceptTorch(self.owner)
        mode.__enter__()
        self._modes.append(mode)
        return super().__enter__()

    def __exit__(self, exc_type, exc_value, traceback):
        try:
            return super().__exit__(exc_type, exc_value, traceback)
        finally:
            self._modes.pop().__exit__(exc_type, exc_value, traceback)
            _ACTIVE.pop()
