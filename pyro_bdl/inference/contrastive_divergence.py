"""Contrastive divergence (CD-k, persistent CD) as a Pyro ELBO for models holding RBM factors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer.elbo import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import torch_item
from pyro.poutine import Trace
from pyro.util import warn_if_nan

from pyro_bdl.models.rbm import ACTIVATION_KEY, PARAMS_KEY, RBM_KEY, VISIBLE_KEY
from pyro_bdl.validation import check_int


class ContrastiveDivergence(ELBO):
    """CD-k (Hinton 2002) or persistent CD (Tieleman 2008) for every RBM factor of a model.

    For an RBM factor ``-F(v)`` of a batch of ``B`` rows (site scale ``s``, ``N / B`` under
    :func:`~pyro_bdl.inference.fit`), the surrogate loss is::

        s * B * (mean_batch F(v_data) - mean_chains F(v_neg))

    with ``v_neg`` detached: ``k`` block-Gibbs sweeps from the batch itself (CD-k), or the
    persistent chains, advanced ``k`` sweeps per step (PCD; the statistics are taken before the
    last sweep, whose ``h`` reuses them). Each pre-activation ``b + v.W`` is computed once, so a
    step costs ``2k + 1`` forward matmuls and autograd's two. Its gradient is the CD estimate of
    ``-d log p(v_data) / d theta = dF(v_data)/d theta - E_model[dF/d theta]``: the positive phase
    by autograd through ``F``, the negative phase with the model expectation replaced by the
    Gibbs samples. Every other site of the model (and a reparameterised guide) contributes its
    ``Trace_ELBO`` term, so an RBM can be the prior of a larger model.

    **The value is not a bound.** :meth:`loss` returns the surrogate above (plus the other
    terms' negative ELBO): a difference of free energies that tends to 0 as the chains mix,
    and can be negative. Score a model with annealed importance sampling
    (:func:`~pyro_bdl.inference.ais_log_partition`), or monitor it with the pseudo-likelihood
    or the reconstruction error of :class:`~pyro_bdl.models.RBM`.

    Args:
        k: Gibbs sweeps per step, >= 1.
        persistent: keep one set of chains per RBM site across steps (PCD).
        num_chains: persistent chains per site (default: the first batch's rows); CD-k uses
            the batch rows as its chains and refuses this argument.
        num_particles: independent evaluations averaged per step.
        closed_form: give each RBM site's surrogate its gradient in closed form, one autograd node
            (:class:`_ClosedFormCD`: the two weight-gradient matmuls fused as in a hand-written
            loop) instead of autograd through both free energies; the same gradient up to
            rounding. Masked sites, or sites scaled by a tensor, always take the autograd path.
            :meth:`loss_and_grads` adds the gradient of RBM parameters that are leaves straight
            into their ``.grad`` (in-place matmuls, no autograd node: tensor hooks on those
            parameters are not called); :meth:`differentiable_loss` goes through autograd.

    References:
        Hinton (2002), Training products of experts by minimizing contrastive divergence.
        Tieleman (2008), Training restricted Boltzmann machines using approximations to the
        likelihood gradient.
    """

    def __init__(self, k: int = 1, *, persistent: bool = False, num_chains: int | None = None,
                 num_particles: int = 1, max_plate_nesting: float = float("inf"),
                 closed_form: bool = True) -> None:  # fmt: skip
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
        self.k = check_int("k", k)
        for flag, value in (("persistent", persistent), ("closed_form", closed_form)):
            if not isinstance(value, bool):
                raise ValueError(f"{flag} must be a bool, got {value!r}")
        self.persistent = persistent
        self.closed_form = closed_form
        self.num_chains = check_int("num_chains", num_chains, allow_none=True)
        if num_chains is not None and not persistent:
            raise ValueError(f"num_chains needs persistent=True (CD-k starts one chain per row), got {num_chains}")
        self.chains: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ persistent state
    def state_dict(self) -> dict[str, Any]:
        """The persistent chains (a copy), for checkpoints."""
        return {"chains": {name: chains.clone() for name, chains in self.chains.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore chains saved by :meth:`state_dict`."""
        if not isinstance(state, dict) or not isinstance(state.get("chains"), dict):
            raise ValueError(f"state must be a dict with a 'chains' dict, got {type(state).__name__}")
        self.chains = {name: chains.clone() for name, chains in state["chains"].items()}

    # ------------------------------------------------------------------ traces and particles
    def _get_trace(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple[Trace, Trace]:
        """One model trace replayed against one guide trace, with log-probs computed."""
        return get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs)

    def _negative_phase(self, name: str, site: dict, params: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """``(v_neg (chains, D), b + v_neg.W (chains, H))`` of an RBM site, one matmul per Gibbs half-sweep.

        CD-k: the first sweep starts from the site's own pre-activations ``b + v.W`` (already computed
        for ``F(v_data)``), then ``k - 1`` sweeps. PCD-k: ``k - 1`` sweeps of the persistent chains,
        the negative phase at their state ``v_neg``, whose pre-activations also draw the last sweep's
        ``h``; the advanced chains are kept for the next step (so the statistics of step t are taken
        at the chains' state before its last sweep: PCD with the sweep and the statistics swapped,
        k sweeps per step as before). The pre-activations are differentiable in ``params`` (the
        factor's ``(weight, visible_bias, hidden_bias)``) while grad mode is on.
        """
        rbm, visible = site["infer"][RBM_KEY], site["infer"][VISIBLE_KEY].detach()
        weight, _, hidden_bias = params
        if visible.dim() != 2:
            raise ValueError(f"the RBM site {name!r} must hold visible rows (batch, D), got {tuple(visible.shape)}")
        if not self.persistent:
            activation = site["infer"].get(ACTIVATION_KEY)
            negative = rbm.gibbs(visible, 1) if activation is None else rbm.sweep_from_activation(activation)
            if self.k > 1:
                negative = rbm.gibbs(negative, self.k - 1)
            return negative, torch.addmm(hidden_bias, negative, weight)
        chains = self.chains.get(name)
        if chains is None:
            rows = self.num_chains or visible.shape[0]
            chains = visible[torch.arange(rows) % visible.shape[0]].clone()
        elif chains.shape[-1] != visible.shape[-1]:
            raise ValueError(f"persistent chains of site {name!r} have {chains.shape[-1]} units, "
                             f"the site {visible.shape[-1]}")  # fmt: skip
        if self.k > 1:
            chains = rbm.gibbs(chains, self.k - 1)
        activation = torch.addmm(hidden_bias, chains, weight)
        self.chains[name] = rbm.sweep_from_activation(activation)
        return chains, activation

    def _rbm_term(self, name: str, site: dict, accumulate: float | None = None) -> torch.Tensor:
        """The CD surrogate ``s * B * (mean F(v_data) - mean F(v_neg))`` of one RBM site (a scalar).

        With ``closed_form`` (and an unmasked site of constant scale, the factor's parameters and
        pre-activations in ``site["infer"]``), one :class:`_ClosedFormCD` node carries its gradient;
        otherwise autograd runs through both free energies. ``accumulate`` (from :meth:`loss_and_grads`,
        ``1 / num_particles``): when the parameters are leaves and the rows constant, their gradient
        times ``accumulate`` is added straight into ``.grad`` (two in-place matmuls for the weight, no
        autograd node) and the value is returned detached."""
        infer = site["infer"]
        rbm, visible = infer[RBM_KEY], infer[VISIBLE_KEY]
        params = infer.get(PARAMS_KEY) or rbm.params()
        scale = site["scale"]
        closed = (self.closed_form and site["mask"] is None and ACTIVATION_KEY in infer and PARAMS_KEY in infer
                  and not (isinstance(scale, torch.Tensor) and (scale.dim() > 0 or scale.requires_grad)))  # fmt: skip
        with torch.set_grad_enabled(torch.is_grad_enabled() and not closed):
            negative, activation = self._negative_phase(name, site, params)
            weight_negative = scale * visible.shape[0] / negative.shape[0]
            free_negative = rbm.free_energy_from(negative, activation, params[1]).sum()
        if not closed:
            return -site["log_prob_sum"] - weight_negative * free_negative
        value = (-site["log_prob_sum"] - weight_negative * free_negative).detach()
        if not torch.is_grad_enabled():
            return value
        positive, negative_probs = torch.sigmoid(infer[ACTIVATION_KEY].detach()), torch.sigmoid(activation)
        gaussian = rbm.visible == "gaussian"
        if accumulate is not None and not visible.requires_grad and all(p.is_leaf and p.requires_grad for p in params):
            with torch.no_grad():
                grads = _cd_gradients(params, visible, positive, negative, negative_probs, scale * accumulate,
                                      weight_negative * accumulate, gaussian, (True, True, True, False),
                                      [p.grad for p in params])  # fmt: skip
            for param, grad in zip(params, grads, strict=False):
                if param.grad is None:
                    param.grad = grad
            return value
        return _ClosedFormCD.apply(value, *params, visible, positive, negative, negative_probs,
                                   scale, weight_negative, gaussian)  # fmt: skip

    def _differentiable_loss_particle(self, model_trace: Trace, guide_trace: Trace,
                                      accumulate: float | None = None) -> tuple[float, torch.Tensor]:  # fmt: skip
        """``(loss, surrogate)`` of one particle: the CD terms of the RBM sites, ``Trace_ELBO`` for the rest."""
        surrogate = torch.zeros(())
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if RBM_KEY in site["infer"]:
                surrogate = surrogate + self._rbm_term(name, site, accumulate)
            else:
                surrogate = surrogate - site["log_prob_sum"]  # -log p of every other site, scaled
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample":
                continue
            _, score_function_term, entropy_term = site["score_parts"]
            if not is_identically_zero(score_function_term):
                raise ValueError(f"ContrastiveDivergence needs a reparameterised guide; site {name!r} is not")
            if not is_identically_zero(entropy_term):
                surrogate = surrogate + entropy_term.sum()
        return torch_item(surrogate), surrogate

    def _particles(self, model: Callable, guide: Callable, args: tuple, kwargs: dict,
                   accumulate: float | None = None):  # fmt: skip
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            yield self._differentiable_loss_particle(model_trace, guide_trace, accumulate)

    # ------------------------------------------------------------------ the ELBO interface
    def loss(self, model: Callable, guide: Callable, *args, **kwargs) -> float:
        """The CD surrogate's value (a float; see the class docstring: not a bound). Advances PCD chains."""
        with torch.no_grad():
            loss = sum(value for value, _ in self._particles(model, guide, args, kwargs)) / self.num_particles
        warn_if_nan(loss, "loss")
        return loss

    def differentiable_loss(self, model: Callable, guide: Callable, *args, **kwargs) -> torch.Tensor:
        """The CD surrogate as a tensor whose gradient is the CD estimate."""
        surrogate = sum(value for _, value in self._particles(model, guide, args, kwargs)) / self.num_particles
        warn_if_nan(surrogate, "loss")
        return surrogate

    def loss_and_grads(self, model: Callable, guide: Callable, *args, **kwargs) -> float:
        """Backward through the surrogate of each particle; returns the value (a float)."""
        loss = 0.0
        accumulate = 1.0 / self.num_particles if self.closed_form else None
        for value, surrogate in self._particles(model, guide, args, kwargs, accumulate):
            loss += value / self.num_particles
            if surrogate.requires_grad:
                (surrogate / self.num_particles).backward(retain_graph=self.retain_graph)
        warn_if_nan(loss, "loss")
        return loss


class _ClosedFormCD(torch.autograd.Function):
    """The CD surrogate ``L = c+ sum_data F(v) - c- sum_chains F(v_neg)`` of one RBM site with its gradient in
    closed form. Its value is given (computed by the caller); the backward pass, with ``s(x) = sigmoid(b + x.W)``
    (the given ``positive`` (B, H) and ``negative`` (C, H)) and the incoming gradient ``g``::

        dL/dW = g (c- v_neg^T s(v_neg) - c+ v^T s(v))          one mm and one fused addmm
        dL/db = g (c- sum s(v_neg) - c+ sum s(v))
        dL/da = g (c- sum v_neg - c+ sum v)                     (v - a) in place of v for Gaussian units
        dL/dv = g c+ (-a - s(v) W^T)                            ((v - a) - s(v) W^T for Gaussian units)

    the same as autograd through ``F`` (``dF/dW = -v^T s(v)``, ``dF/db = -s(v)``, ``dF/da = -v``)."""

    @staticmethod
    def forward(ctx, value, weight, visible_bias, hidden_bias, visible, positive, negative, negative_probs,
                weight_positive, weight_negative, gaussian):  # fmt: skip
        ctx.save_for_backward(weight, visible_bias, visible, positive, negative, negative_probs)
        ctx.weights, ctx.gaussian = (weight_positive, weight_negative), gaussian
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        weight, visible_bias, visible, positive, negative, negative_probs = ctx.saved_tensors
        weight_positive, weight_negative = (grad * w for w in ctx.weights)
        needs = ctx.needs_input_grad
        grads = _cd_gradients((weight, visible_bias), visible, positive, negative, negative_probs, weight_positive,
                              weight_negative, ctx.gaussian, needs[1:5])  # fmt: skip
        return (None, *grads, None, None, None, None, None, None)


def _cd_gradients(params: tuple, visible: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                  negative_probs: torch.Tensor, weight_positive, weight_negative, gaussian: bool, needs: tuple,
                  into: list | None = None) -> list:  # fmt: skip
    """``dL/d(weight, visible_bias, hidden_bias, visible)`` of ``L = c+ sum F(v) - c- sum F(v_neg)`` (see
    :class:`_ClosedFormCD`; None where ``needs`` is False), added in place to the tensors of ``into`` where
    given (``.grad`` of the parameters): the weight's by two in-place matmuls."""
    weight, visible_bias = params[0], params[1]
    into = into or [None] * 3
    positive, negative_probs = positive * weight_positive, negative_probs * weight_negative
    data = visible.detach()
    grads: list = [None] * 4
    if needs[0]:
        grad = torch.mm(negative.T, negative_probs) if into[0] is None else into[0].addmm_(negative.T, negative_probs)
        grads[0] = grad.addmm_(data.T, positive, alpha=-1)
    if needs[1]:
        rows, chains = (data - visible_bias, negative - visible_bias) if gaussian else (data, negative)
        grad = weight_negative * chains.sum(0) - weight_positive * rows.sum(0)
        grads[1] = grad if into[1] is None else into[1].add_(grad)
    if needs[2]:
        grad = negative_probs.sum(0) - positive.sum(0)
        grads[2] = grad if into[2] is None else into[2].add_(grad)
    if needs[3]:
        field = visible - visible_bias if gaussian else -visible_bias
        grads[3] = weight_positive * field - positive @ weight.detach().T
    return grads


__all__ = ["ContrastiveDivergence"]
