"""Contrastive divergence (CD-k, persistent CD) as a Pyro ELBO for models holding RBM factors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.distributions.util import is_identically_zero
from pyro.infer.elbo import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.poutine import Trace
from pyro.poutine.util import site_is_subsample
from pyro.util import warn_if_nan

from pyro_bdl.models.rbm import ACTIVATION_KEY, COLUMNS_KEY, PARAMS_KEY, RBM_KEY, VISIBLE_KEY, RBMGuide, bernoulli
from pyro_bdl.validation import check_int
from triton_kernels.cpu_binary_rows import (
    MAX_DENSITY,
    BinaryColumns,
    binary_addmm,
    binary_columns,
    binary_outer_add_,
)

INIT_CHAINS = ("model", "data")
_Negative = tuple[torch.Tensor, torch.Tensor, torch.Tensor, BinaryColumns | None]


class ContrastiveDivergence(ELBO):
    """CD-k (Hinton 2002) or persistent CD (Tieleman 2008) for every RBM factor of a model.

    For an RBM factor ``-F(v)`` of a batch of ``B`` rows (site scale ``s``, ``N / B`` under
    :func:`~pyro_bdl.inference.fit`), the surrogate loss is::

        s * B * (mean_batch F(v_data) - mean_chains F(v_neg))

    with ``v_neg`` detached: ``k`` block-Gibbs sweeps from the batch itself (CD-k), or the
    persistent chains, advanced ``k`` sweeps per step (PCD; each chain keeps its hidden state, and
    a step's sweeps start with its visible half under the current parameters). Each pre-activation
    ``b + v.W`` is computed once, so a step costs ``2k + 1`` forward matmuls and autograd's two.
    Its gradient is the CD estimate of ``-d log p(v_data) / d theta = dF(v_data)/d theta -
    E_model[dF/d theta]``: the positive phase by autograd through ``F``, the negative phase with the
    model expectation replaced by the Gibbs samples. Every other site of the model (and a
    reparameterised guide) contributes its ``Trace_ELBO`` term, so an RBM can be the prior of a larger model.

    **The value is not a bound.** :meth:`loss` returns the surrogate above (plus the other
    terms' negative ELBO): a difference of free energies that tends to 0 as the chains mix,
    and can be negative. Score a model with annealed importance sampling
    (:func:`~pyro_bdl.inference.ais_log_partition`), or monitor it with the pseudo-likelihood
    or the reconstruction error of :class:`~pyro_bdl.models.RBM`.

    Args:
        k: Gibbs sweeps per step, >= 1.
        persistent: keep one set of chains per RBM site across steps (PCD), as their hidden states.
        num_chains: persistent chains per site (default: the first batch's rows); CD-k uses
            the batch rows as its chains and refuses this argument.
        init_chains: where PCD's chains start: ``"model"`` (the default), drawn from ``p(v | h = 0)`` of the
            factor at the first step (``Bernoulli(sigmoid(a))``, ``N(a, 1)`` for Gaussian units: the model's
            visible marginal while the weights are small, and what scikit-learn's ``BernoulliRBM`` does), or
            ``"data"``, copies of the first batch's rows (repeated as needed). CD-k ignores it (its chains
            start at the batch).
        num_particles: independent evaluations averaged per step.
        closed_form: give each RBM site's surrogate its gradient in closed form, one autograd node
            (:class:`_ClosedFormCD`: the two weight-gradient matmuls fused as in a hand-written
            loop) instead of autograd through both free energies; the same gradient up to
            rounding. Masked sites, or sites scaled by a tensor, always take the autograd path.
            :meth:`loss_and_grads` adds the gradient of RBM parameters that are leaves straight
            into their ``.grad`` (in-place matmuls, no autograd node: tensor hooks on those
            parameters are not called); :meth:`differentiable_loss` goes through autograd.
        fast_lr: learning rate of FPCD's fast parameters (Tieleman & Hinton 2009; 0, the default: plain
            PCD). The persistent chains then sample with ``theta + theta_fast`` (and the negative statistics
            are taken under it), and every step with gradients (``loss_and_grads``, ``differentiable_loss``)
            updates ``theta_fast <- fast_decay * theta_fast - fast_lr * dL/dtheta`` with the step's CD
            gradient ``dL/dtheta`` of the surrogate as scaled in the model. Needs ``persistent``,
            ``closed_form`` and one particle; ``theta_fast`` never enters the model's density.
        fast_decay: the fast parameters' decay per step, in [0, 1) (19/20 in their paper).

    References:
        Hinton (2002), Training products of experts by minimizing contrastive divergence.
        Tieleman (2008), Training restricted Boltzmann machines using approximations to the
        likelihood gradient.
        Tieleman & Hinton (2009), Using fast weights to improve persistent contrastive divergence.
    """

    def __init__(self, k: int = 1, *, persistent: bool = False, num_chains: int | None = None,
                 num_particles: int = 1, max_plate_nesting: float = float("inf"),
                 closed_form: bool = True, fast_lr: float = 0.0, fast_decay: float = 0.95,
                 init_chains: str = "model") -> None:  # fmt: skip
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
        if init_chains not in INIT_CHAINS:
            raise ValueError(f"init_chains must be one of {INIT_CHAINS}, got {init_chains!r}")
        self.init_chains = init_chains
        self.chains: dict[str, torch.Tensor] = {}  # PCD: each site's chains' hidden states (chains, H)
        self._visible_chains: dict[str, torch.Tensor] = {}  # visible chains of an older checkpoint, used once
        self.fast_lr, self.fast_decay = _check_fast(fast_lr, fast_decay)
        if fast_lr and not (persistent and closed_form and num_particles == 1):
            raise ValueError("fast_lr > 0 (FPCD) needs persistent=True, closed_form=True and num_particles=1, got "
                             f"{persistent}, {closed_form} and {num_particles}")  # fmt: skip
        self.fast: dict[str, list[torch.Tensor]] = {}
        self._last_graph_free = False

    # ------------------------------------------------------------------ persistent state
    def state_dict(self) -> dict[str, Any]:
        """The persistent chains' hidden states (chains, H) and FPCD's fast parameters (copies), for checkpoints."""
        return {"chains": {name: chains.clone() for name, chains in self.chains.items()},
                "visible_chains": {name: chains.clone() for name, chains in self._visible_chains.items()},
                "chain_state": "hidden",
                "fast": {name: [p.clone() for p in fast] for name, fast in self.fast.items()}}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore chains (and fast parameters, if saved: else they start at 0) saved by :meth:`state_dict`.

        A state saved before the chains kept their hidden states (no ``"chain_state"``) holds visible chains
        (chains, D): each site's next step takes its negative phase there and keeps their hidden states."""
        if not isinstance(state, dict) or not isinstance(state.get("chains"), dict):
            raise ValueError(f"state must be a dict with a 'chains' dict, got {type(state).__name__}")
        chains = {name: chains.clone() for name, chains in state["chains"].items()}
        if state.get("chain_state") == "hidden":
            self.chains = chains
            self._visible_chains = {name: c.clone() for name, c in state.get("visible_chains", {}).items()}
        else:  # an older state: its chains are visible rows, used once by the next step
            self.chains, self._visible_chains = {}, chains
        self.fast = {name: [p.clone() for p in fast] for name, fast in state.get("fast", {}).items()}

    # ------------------------------------------------------------------ traces and particles
    def _get_trace(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple[Trace, Trace]:
        """One model trace replayed against one guide trace, log-probs of the model's sample sites and score
        parts of the guide's computed. With Pyro's validation on (or a ``GuideMessenger`` guide) this is Pyro's
        ``get_importance_trace`` with all its checks; with it off, the same traces without its two trace copies
        (the plates' subsample sites stay in the traces, skipped by the loss: Pyro's ``site_is_subsample``), and
        :class:`~pyro_bdl.models.RBMGuide` (which samples nothing) is not run: its trace is empty."""
        if is_validation_enabled() or isinstance(poutine.unwrap(guide), poutine.messenger.Messenger):
            return get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs)
        # RBMGuide samples and reads nothing (its forward is empty): its trace is empty
        guide_trace = Trace() if type(guide) is RBMGuide else poutine.trace(guide).get_trace(*args, **kwargs)
        if any(site["type"] == "sample" for site in guide_trace.nodes.values()):
            model = poutine.replay(model, trace=guide_trace)  # (nothing to replay from an empty guide)
        model_trace = poutine.trace(model).get_trace(*args, **kwargs)
        model_trace.compute_log_prob(_not_subsample)
        guide_trace.compute_score_parts()
        return model_trace, guide_trace

    def _negative_phase(self, name: str, site: dict, params: tuple) -> _Negative:
        """``(v_neg (chains, D), b + v_neg.W (chains, H), sigmoid(b + v_neg.W) (detached), ones of v_neg)`` of an
        RBM site, one matmul per Gibbs half-sweep.

        CD-k: the first sweep starts from the site's own pre-activations ``b + v.W`` (already computed
        for ``F(v_data)``), then ``k - 1`` sweeps. PCD-k keeps each chain's hidden state ``h``: a step
        draws ``v ~ p(v | h)`` under the current parameters (at the first step, the chains of
        ``init_chains``), makes ``k - 1`` more sweeps, takes the negative phase at ``v_neg`` and keeps
        ``h ~ p(h | v_neg)``, drawn from the same pre-activations, for the next step (Tieleman 2008's
        order, and scikit-learn's). The visible half of each sweep is thus drawn after the previous
        step's update: drawing it before (keeping ``v``) lags the chains one update behind the model,
        and on MNIST cost 12 nats of test log-likelihood after 5 epochs of PCD-1 (docs/rbm.md). The
        pre-activations are differentiable in ``params`` (the factor's ``(weight, visible_bias,
        hidden_bias)``) while grad mode is on. Binary chains (binary visible units) are listed once
        (:func:`~triton_kernels.cpu_binary_rows.binary_columns`, None when the kernels are off) for
        ``b + v_neg.W`` by the binary-row kernel and for ``v_neg^T s(v_neg)``.
        """
        rbm, visible = site["infer"][RBM_KEY], site["infer"][VISIBLE_KEY].detach()
        weight, _, hidden_bias = params
        if visible.dim() != 2:
            raise ValueError(f"the RBM site {name!r} must hold visible rows (batch, D), got {tuple(visible.shape)}")
        if not self.persistent:
            activation = site["infer"].get(ACTIVATION_KEY)
            negative = rbm.gibbs(visible, 1, params) if activation is None else rbm.sweep_from_activation(
                activation, params)  # fmt: skip
            if self.k > 1:
                negative = rbm.gibbs(negative, self.k - 1, params)
            columns = _chain_columns(rbm, negative)
            activation = binary_addmm(hidden_bias, negative, weight, columns) if columns is not None else torch.addmm(
                hidden_bias, negative, weight)  # fmt: skip
            return negative, activation, torch.sigmoid(activation.detach()), columns
        sampler = params
        if self.fast_lr:  # FPCD: the chains move (and the statistics are taken) under theta + theta_fast
            fast = self.fast.setdefault(name, [torch.zeros_like(p, memory_format=torch.contiguous_format).detach()
                                               for p in params])  # fmt: skip
            sampler = tuple(p.detach() + f for p, f in zip(params, fast, strict=True))
            weight, hidden_bias = sampler[0], sampler[2]
        hidden, chains = self.chains.get(name), self._visible_chains.pop(name, None)
        if hidden is not None:
            if hidden.shape[-1] != weight.shape[-1]:
                raise ValueError(f"persistent chains of site {name!r} have {hidden.shape[-1]} hidden units, "
                                 f"the site {weight.shape[-1]}")  # fmt: skip
            chains = rbm.sample_visible(hidden, sampler)
        elif chains is None:
            chains = self._first_chains(rbm, visible, sampler[1].detach())
        if chains.shape[-1] != visible.shape[-1]:
            raise ValueError(f"persistent chains of site {name!r} have {chains.shape[-1]} units, "
                             f"the site {visible.shape[-1]}")  # fmt: skip
        if self.k > 1:
            chains = rbm.gibbs(chains, self.k - 1, sampler)
        columns = _chain_columns(rbm, chains)
        activation = binary_addmm(hidden_bias, chains, weight, columns) if columns is not None else torch.addmm(
            hidden_bias, chains, weight)  # fmt: skip
        probs = torch.sigmoid(activation.detach())
        self.chains[name] = bernoulli(probs)
        return chains, activation, probs, columns

    def _first_chains(self, rbm, visible: torch.Tensor, visible_bias: torch.Tensor) -> torch.Tensor:
        """The persistent chains (num_chains, D) at the first step: copies of the rows of ``visible`` (batch, D)
        (``init_chains="data"``) or draws of ``p(v | h = 0)`` under the visible biases ``a`` (D,) (``"model"``)."""
        rows = self.num_chains or visible.shape[0]
        if self.init_chains == "data":
            return visible[torch.arange(rows) % visible.shape[0]].clone()
        return rbm.sample_visible_from_activation(visible_bias.to(visible.dtype).expand(rows, -1))

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
        closed = self._closed(site)
        if self.fast_lr and not closed:
            raise ValueError(f"fast_lr > 0 (FPCD) needs an unmasked RBM site of constant scale; {name!r} is not")
        gaussian = rbm.visible == "gaussian"
        if not closed:
            negative, activation, _, _ = self._negative_phase(name, site, params)
            weight_negative = scale * visible.shape[0] / negative.shape[0]
            return -site["log_prob_sum"] - weight_negative * rbm.free_energy_from(negative, activation, params[1]).sum()
        scale = float(scale)
        with torch.no_grad():
            negative, activation, negative_probs, negative_columns = self._negative_phase(name, site, params)
            weight_negative = scale * visible.shape[0] / negative.shape[0]
            # sum_chains F(v_neg) = -(sum_chains v_neg).a - sum softplus(b + v_neg.W); the chains' sum serves
            # the visible biases' gradient too
            chain_sum = None if gaussian else negative.sum(0)
            free_negative = (rbm.free_energy_from(negative, activation, params[1]).sum() if gaussian
                             else -(chain_sum @ params[1]) - F.softplus(activation).sum())  # fmt: skip
            value = -site["log_prob_sum"].detach() - weight_negative * free_negative
        if not torch.is_grad_enabled():
            return value
        positive = torch.sigmoid(infer[ACTIVATION_KEY].detach())
        needs = (True, True, True, False)
        columns = (infer.get(COLUMNS_KEY), negative_columns)  # the ones of the rows and of the chains, if listed
        if accumulate is not None and not visible.requires_grad and all(p.is_leaf and p.requires_grad for p in params):
            with torch.no_grad():  # FPCD needs the step's gradient alone: then it is added into .grad after
                grads = _cd_gradients(params, visible, positive, negative, negative_probs, scale * accumulate,
                                      weight_negative * accumulate, gaussian, needs,
                                      None if self.fast_lr else [p.grad for p in params], chain_sum,
                                      columns)  # fmt: skip
                if self.fast_lr:  # one particle: accumulate == 1
                    self._update_fast(name, grads)
                    for param, grad in zip(params, grads, strict=False):
                        if param.grad is not None:
                            param.grad.add_(grad)
            for param, grad in zip(params, grads, strict=False):
                if param.grad is None:
                    param.grad = grad
            return value
        if self.fast_lr:
            with torch.no_grad():
                self._update_fast(name, _cd_gradients(params, visible, positive, negative, negative_probs, scale,
                                                      weight_negative, gaussian, needs, None, chain_sum,
                                                      columns))  # fmt: skip
        return _ClosedFormCD.apply(value, *params, visible, positive, negative, negative_probs,
                                   scale, weight_negative, gaussian)  # fmt: skip

    def _update_fast(self, name: str, grads: list) -> None:
        """FPCD: ``theta_fast <- fast_decay * theta_fast - fast_lr * dL/dtheta`` for the site's three parameters."""
        for fast, grad in zip(self.fast[name], grads, strict=False):
            fast.mul_(self.fast_decay).add_(grad, alpha=-self.fast_lr)

    def _differentiable_loss_particle(self, model_trace: Trace, guide_trace: Trace,
                                      accumulate: float | None = None) -> tuple[float, torch.Tensor]:  # fmt: skip
        """``(loss, surrogate)`` of one particle: the CD terms of the RBM sites, ``Trace_ELBO`` for the rest."""
        surrogate = torch.zeros(())
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if RBM_KEY in site["infer"]:
                surrogate = surrogate + self._rbm_term(name, site, accumulate)
            else:
                surrogate = surrogate - site["log_prob_sum"]  # -log p of every other site, scaled
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            _, score_function_term, entropy_term = site["score_parts"]
            if not is_identically_zero(score_function_term):
                raise ValueError(f"ContrastiveDivergence needs a reparameterised guide; site {name!r} is not")
            if not is_identically_zero(entropy_term):
                surrogate = surrogate + entropy_term.sum()
        return torch_item(surrogate), surrogate

    def _closed(self, site: dict) -> bool:
        """Whether an RBM site's term gets its gradient in closed form: ``closed_form``, the factor's parameters
        and pre-activations in its ``infer``, no mask, and a constant scale (a float or a 0-dim tensor)."""
        infer, scale = site["infer"], site["scale"]
        return (self.closed_form and site["mask"] is None and ACTIVATION_KEY in infer and PARAMS_KEY in infer
                and not (isinstance(scale, torch.Tensor) and (scale.dim() > 0 or scale.requires_grad)))  # fmt: skip

    def _graph_free(self, model_trace: Trace, guide_trace: Trace) -> bool:
        """Whether no term of these traces needs autograd through the model: every sample site of the model an
        RBM site with a closed-form gradient (which links straight to the parameters and rows), the guide
        without sample sites."""

        def sites(trace: Trace) -> list:
            return [site for site in trace.nodes.values() if site["type"] == "sample" and not site_is_subsample(site)]

        return not sites(guide_trace) and all(RBM_KEY in site["infer"] and self._closed(site)
                                              for site in sites(model_trace))  # fmt: skip

    def _traces(self, model: Callable, guide: Callable, args: tuple, kwargs: dict):
        """``num_particles`` pairs of traces. Once a model's traces have needed no autograd graph
        (:meth:`_graph_free`), the next ones are recorded under ``torch.no_grad()`` (the model's free energy
        builds no graph: about 0.2 ms of a 784-500 step) and checked again; a pair that does need the graph is
        recorded again with it (fresh draws of the model's and guide's own sample sites)."""
        for _ in range(self.num_particles):
            if self._last_graph_free and torch.is_grad_enabled():
                with torch.no_grad():
                    model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
                if self._graph_free(model_trace, guide_trace):
                    yield model_trace, guide_trace
                    continue
            model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
            self._last_graph_free = self._graph_free(model_trace, guide_trace)
            yield model_trace, guide_trace

    def _particles(self, model: Callable, guide: Callable, args: tuple, kwargs: dict,
                   accumulate: float | None = None):  # fmt: skip
        for model_trace, guide_trace in self._traces(model, guide, args, kwargs):
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
        weight_positive, weight_negative = (float(grad) * w for w in ctx.weights)
        needs = ctx.needs_input_grad
        grads = _cd_gradients((weight, visible_bias), visible, positive, negative, negative_probs, weight_positive,
                              weight_negative, ctx.gaussian, needs[1:5])  # fmt: skip
        return (None, *grads, None, None, None, None, None, None)


def _cd_gradients(params: tuple, visible: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                  negative_probs: torch.Tensor, weight_positive: float, weight_negative: float, gaussian: bool,
                  needs: tuple, into: list | None = None, chain_sum: torch.Tensor | None = None,
                  columns: tuple = (None, None)) -> list:  # fmt: skip
    """``dL/d(weight, visible_bias, hidden_bias, visible)`` of ``L = c+ sum F(v) - c- sum F(v_neg)`` (see
    :class:`_ClosedFormCD`; None where ``needs`` is False), added in place to the tensors of ``into`` where
    given (``.grad`` of the parameters): the weight's by two matmuls with the weights ``c+``, ``c-`` (floats)
    folded into their ``alpha`` and ``beta``, each by the binary-row scatter-add
    (:func:`~triton_kernels.cpu_binary_rows.binary_outer_add_`) when its rows are binary (binary visible
    units; dense ``addmm_`` otherwise). ``chain_sum``: ``sum_chains v_neg`` (D,) if already computed;
    ``columns``: the listings of the ones of ``(visible, negative)`` where made."""
    weight, visible_bias = params[0], params[1]
    into = into or [None] * 3
    data = visible.detach()
    grads: list = [None] * 4
    if needs[0]:
        # c- v_neg^T s(v_neg) - c+ v^T s(v), always added into a tensor (zeros if none is given: the same rounding
        # whether or not a gradient was there, so a resumed run repeats an uninterrupted one bit for bit)
        grad = torch.zeros_like(weight, memory_format=torch.contiguous_format) if into[0] is None else into[0]
        if gaussian:
            grads[0] = grad.addmm_(negative.T, negative_probs, alpha=weight_negative).addmm_(
                data.T, positive, alpha=-weight_positive)  # fmt: skip
        else:  # binary rows: each product a sum of rows of s(.) at the ones (dense when the kernels cannot)
            _outer_add_(grad, negative, negative_probs, weight_negative, columns[1])
            grads[0] = _outer_add_(grad, data, positive, -weight_positive, columns[0])
    if needs[1]:
        if gaussian:
            rows, chains = (data - visible_bias).sum(0), (negative - visible_bias).sum(0)
        else:
            rows, chains = data.sum(0), negative.sum(0) if chain_sum is None else chain_sum
        grad = torch.add(chains * weight_negative, rows, alpha=-weight_positive)
        grads[1] = grad if into[1] is None else into[1].add_(grad)
    if needs[2]:
        grad = torch.add(negative_probs.sum(0) * weight_negative, positive.sum(0), alpha=-weight_positive)
        grads[2] = grad if into[2] is None else into[2].add_(grad)
    if needs[3]:
        field = visible - visible_bias if gaussian else -visible_bias
        grads[3] = torch.addmm(weight_positive * field, positive, weight.detach().T, alpha=-weight_positive)
    return grads


def _outer_add_(grad: torch.Tensor, rows: torch.Tensor, probs: torch.Tensor, alpha: float,
                columns: BinaryColumns | None) -> torch.Tensor:  # fmt: skip
    """``grad += alpha * rows^T probs`` for binary ``rows`` (listed now if ``columns`` is None): the binary-row
    scatter-add where it runs, else ``addmm_``."""
    columns = binary_columns(rows, MAX_DENSITY) if columns is None else columns
    return grad.addmm_(rows.T, probs, alpha=alpha) if columns is None else binary_outer_add_(
        grad, rows, probs, alpha, columns)  # fmt: skip


def _chain_columns(rbm, chains: torch.Tensor) -> BinaryColumns | None:
    """The ones of binary chains (binary visible units; listed by their binary-row kernel), else None (also when
    they are too dense for the kernels: the listing pass is then skipped)."""
    return binary_columns(chains, MAX_DENSITY) if rbm.visible == "bernoulli" else None


def _not_subsample(name: str, site: dict) -> bool:
    """Site filter of :meth:`~pyro.poutine.Trace.compute_log_prob`: every site but the plates' subsample sites."""
    return not site_is_subsample(site)


def _check_fast(fast_lr: object, fast_decay: object) -> tuple[float, float]:
    """``(fast_lr, fast_decay)`` checked: a finite ``fast_lr >= 0`` and ``fast_decay`` in [0, 1)."""
    for flag, value, ok in (("fast_lr", fast_lr, lambda x: 0 <= x < float("inf")),
                            ("fast_decay", fast_decay, lambda x: 0 <= x < 1)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            expected = "a finite float >= 0" if flag == "fast_lr" else "a float in [0, 1)"
            raise ValueError(f"{flag} must be {expected}, got {value!r}")
    return float(fast_lr), float(fast_decay)


__all__ = ["ContrastiveDivergence"]
