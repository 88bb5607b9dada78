"""BayesBiNN's natural-gradient step for mean-field ``SignBernoulli`` guides (Meng, Bachmann & Khan, ICML 2020).

For ``q(w) = SignBernoulli(l)`` the natural parameter is ``lambda = l / 2`` and the mean
``mu = tanh(l / 2)``; the Fisher information in ``lambda`` is ``Var(w) = 1 - mu^2``. The natural
gradient of the loss ``L = -ELBO`` in ``lambda`` is therefore the ordinary gradient in ``mu``::

    F^-1 dL/dlambda = dL/dmu = (dL/dl) * 4 / (1 - mu^2)      (in l-units: dl = 2 dlambda)

and a natural-gradient step with momentum (BayesBiNN, Algorithm 1, where ``1 - mu^2 =
4 sigmoid(l) sigmoid(-l)`` is computed without cancellation)::

    m <- beta m + (1 - beta) * 4 (dL/dl) / (1 - mu^2)
    l <- l - lr * m

With the analytic KL of ``TraceMeanField_ELBO`` the prior's part of ``dL/dmu`` is exactly
``l - l_prior`` (an exponential-family identity), so without data the step contracts the logits
to the prior by ``1 - lr`` per step: BayesBiNN's ``lambda <- (1 - alpha) lambda + alpha (lambda_0
- N g_mu)`` with ``alpha = lr``. Unlike Adam on the logits, the step does not vanish when a
logit grows (the straight-through gradient ``dL/dl`` shrinks like ``1 - mu^2``, and the division
undoes it), so confident weights can still flip when the data ask for it.

With the guide's ``estimator="mean"`` (:mod:`pyro_bdl.layers.sign_bernoulli`) the data part of
``dL/dl`` is ``g dmu/dl`` with ``g = dL/dw`` at the hard sample, so the step is exactly BayesBiNN's
``lambda <- (1 - alpha) lambda - alpha (N g - lambda_0)`` for every weight, however confident.
``max_logit`` bounds the logits (below 100, where ``1 - mu^2`` underflows in float32).

:class:`SignBernoulliNaturalGradient` is a torch optimizer; parameters in a group with
``natural=False`` (batch-norm scales, biases) take a plain Adam step. :func:`natural_gradient_optim`
wraps it for Pyro (``SVI``, :func:`~pyro_bdl.inference.fit`), natural for the guide's logits.
"""

from __future__ import annotations

import torch
from pyro.optim import PyroOptim

from pyro_bdl.validation import check_positive

__all__ = ["SignBernoulliNaturalGradient", "natural_gradient_optim"]

_MIN_VARIANCE = 1e-30


class SignBernoulliNaturalGradient(torch.optim.Optimizer):
    """BayesBiNN's step on ``SignBernoulli`` logits (module docstring); Adam on parameters with ``natural=False``.

    Args:
        params: parameters or groups.
        lr: the step size (``alpha`` of BayesBiNN for natural groups, Adam's rate otherwise).
        beta: momentum of the natural gradient.
        betas: Adam's moment decay rates, for the other parameters.
        eps: Adam's denominator term, for the other parameters.
        lr_decay: ``lr`` is multiplied by this after every step (1: constant).
        natural: whether the parameters are SignBernoulli logits.
        max_logit: natural parameters are clipped to ``[-max_logit, max_logit]`` after each step
            (``None``: no clipping); the logits' counterpart of BinaryNet's clipping of its latent
            weights to [-1, 1]. It keeps ``1 - mu^2`` (about ``4 exp(-|l|)``) from underflowing in
            float32 (near ``|l| = 100``), where the gradients through ``mu`` and the analytic KL
            would vanish and the weight would freeze.
    """

    def __init__(self, params, lr: float = 1e-3, beta: float = 0.9, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, lr_decay: float = 1.0, natural: bool = True,
                 max_logit: float | None = None) -> None:  # fmt: skip
        check_positive("lr", lr)
        check_positive("max_logit", max_logit, allow_none=True)
        if not 0 <= beta < 1:
            raise ValueError(f"beta must lie in [0, 1), got {beta!r}")
        if not 0 < lr_decay <= 1:
            raise ValueError(f"lr_decay must lie in (0, 1], got {lr_decay!r}")
        defaults = {"lr": lr, "beta": beta, "betas": betas, "eps": eps, "lr_decay": lr_decay, "natural": natural,
                    "max_logit": max_logit}  # fmt: skip
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if group["natural"]:
                    self._natural_step(p, state, group)
                else:
                    self._adam_step(p, state, group)
            group["lr"] *= group["lr_decay"]
        return loss

    @staticmethod
    def _natural_step(p: torch.Tensor, state: dict, group: dict) -> None:
        variance = (4 * torch.sigmoid(p) * torch.sigmoid(-p)).clamp_min(_MIN_VARIANCE)  # 1 - mu^2
        natural = 4 * p.grad / variance
        if "momentum" not in state:
            state["momentum"] = torch.zeros_like(p)
        momentum = state["momentum"]
        momentum.mul_(group["beta"]).add_(natural, alpha=1 - group["beta"])
        p.sub_(group["lr"] * momentum)
        if group["max_logit"] is not None:
            p.clamp_(-group["max_logit"], group["max_logit"])

    @staticmethod
    def _adam_step(p: torch.Tensor, state: dict, group: dict) -> None:
        beta1, beta2 = group["betas"]
        if "step" not in state:
            state["step"], state["m"], state["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
        state["step"] += 1
        state["m"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
        state["v"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        m_hat = state["m"] / (1 - beta1 ** state["step"])
        v_hat = state["v"] / (1 - beta2 ** state["step"])
        p.sub_(group["lr"] * m_hat / (v_hat.sqrt() + group["eps"]))


def natural_gradient_optim(lr: float, other_lr: float, *, beta: float = 0.9, lr_decay: float = 1.0,
                           max_logit: float | None = None, prefix: str = "logits.") -> PyroOptim:  # fmt: skip
    """A Pyro optimizer: BayesBiNN's natural step for the params named ``prefix...``, Adam for the rest.

    Args:
        lr: the natural step size alpha of the logits.
        other_lr: Adam's rate for every other param (batch norms).
        beta: momentum of the natural gradient.
        lr_decay: both rates are multiplied by this after every step.
        max_logit: the logits' clipping bound (:class:`SignBernoulliNaturalGradient`; ``None``: none).
        prefix: the name prefix of :class:`~pyro_bdl.models.bayes_binary.BernoulliMeanFieldGuide`'s logits.
    """
    check_positive("other_lr", other_lr)
    check_positive("max_logit", max_logit, allow_none=True)

    def per_param(name: str) -> dict:
        natural = name.startswith(prefix)
        return {"lr": lr if natural else other_lr, "beta": beta, "lr_decay": lr_decay, "natural": natural,
                "max_logit": max_logit}  # fmt: skip

    return PyroOptim(SignBernoulliNaturalGradient, per_param)
