"""NVIL's variance normalisation as a small extension of Pyro's ``TraceGraph_ELBO`` baselines.

Pyro's :class:`~pyro.infer.TraceGraph_ELBO` forms, for every non-reparameterised guide site
``h`` (Schulman et al. 2015; ``pyro/infer/tracegraph_elbo.py``, ``_compute_elbo``)::

    surrogate += score_function(h) * stop_gradient(l_h - b_h)
    l_h = sum of log p - log q terms downstream of h   (the "downstream cost"), per datum
    b_h = decaying average and/or nn_baseline(input) or baseline_value   (the site's options)

and adds ``sum (l_h - b_h)^2`` to the loss so learned baselines regress the signal. Mnih &
Gregor (2014, "Neural variational inference and learning in belief networks", sec. 3.3 and
Algorithm 1) additionally divide the centred signal by a running estimate of its standard
deviation, ``max(1, sqrt(v))``, so the inference network's step size does not depend on the
signal's scale, which drifts by orders of magnitude during training.

:class:`NormalisedTraceGraph_ELBO` is ``TraceGraph_ELBO`` with that one step added, per site::

    r_t = (l_h - b_h) / s                 per-datum centred signal (s = the site's minibatch scale)
    v_t = beta v_{t-1} + (1 - beta) mean_n r_{t,n}^2     (bias-corrected like Adam's moments)
    surrogate += score_function(h) * stop_gradient(s * r_t / max(1, sqrt(v_{t-1})))

Two deliberate differences from NVIL's Algorithm 1, both to keep the estimator exactly
unbiased for a known rescaling: ``v_{t-1}`` uses the signals of earlier steps only (NVIL
updates its statistics with the current minibatch first, which correlates the divisor with the
current samples), and ``v`` is the mean square of the signal already centred by Pyro's
baselines (NVIL subtracts its running mean ``c`` as a baseline; here that is the
``use_decaying_avg_baseline`` option). Hence, given the past, the estimate of
``grad_phi_h ELBO`` for the guide parameters ``phi_h`` of site ``h`` is unbiased for
``grad_phi_h ELBO / max(1, sqrt(v_{t-1}))``: a positive per-site rescaling (a diagonal
preconditioner, still an ascent direction), not the gradient itself. Model parameters get
``grad log p`` unchanged. At the first step ``v`` is undefined and the divisor is 1.

The baselines themselves are Pyro's (``_construct_baseline`` is called with the options the
guide put in ``infer["baseline"]``), with one change of units: they are fitted to the per-datum
signal ``l_h / s`` rather than the minibatch-scaled one, so a neural baseline predicts nats per
datum whatever ``N / B`` :func:`~pyro_bdl.inference.fit` applies; with ``s = 1`` this is Pyro's
behaviour exactly. This module relies on ``pyro.infer.tracegraph_elbo`` internals of Pyro 1.9
(``_construct_baseline``, the provenance-tracked downstream costs); the enumeration tests in
``tests/pyro_bdl/inference/test_control_variates.py`` fail if they change meaning.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pyro
import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer import TraceGraph_ELBO
from pyro.infer.tracegraph_elbo import _construct_baseline
from pyro.infer.util import MultiFrameTensor
from pyro.ops.provenance import detach_provenance, get_provenance
from pyro.poutine.trace_struct import Trace

__all__ = ["NormalisedTraceGraph_ELBO", "SignalNormaliser"]


class SignalNormaliser:
    """Running mean square ``v`` of each site's centred learning signal, and the divisor ``max(1, sqrt(v))``.

    Args:
        beta: decay of the exponential moving average, in [0, 1) (NVIL: alpha = 0.8).

    Attributes:
        last_divisors: the divisor each site used at the latest step (for tests and logs).
    """

    def __init__(self, beta: float = 0.8) -> None:
        if not isinstance(beta, int | float) or isinstance(beta, bool) or not 0.0 <= beta < 1.0:
            raise ValueError(f"normaliser_beta must be a number in [0, 1), got {beta!r}")
        self.beta = float(beta)
        self.mean_square: dict[str, float] = {}
        self.steps: dict[str, int] = {}
        self.last_divisors: dict[str, float] = {}

    def divisor(self, site: str) -> float:
        """``max(1, sqrt(v))`` from the steps so far (1 before the first)."""
        steps = self.steps.get(site, 0)
        if steps == 0:
            return 1.0
        debiased = self.mean_square[site] / (1.0 - self.beta**steps)
        return max(1.0, math.sqrt(debiased))

    def __call__(self, site: str, centred: torch.Tensor) -> torch.Tensor:
        """``centred / divisor(site)``, then fold ``mean(centred^2)`` into the running estimate."""
        # --8<-- [start:normaliser]
        divisor = self.divisor(site)
        self.last_divisors[site] = divisor
        batch = centred.detach().square().mean().item()
        self.mean_square[site] = self.beta * self.mean_square.get(site, 0.0) + (1.0 - self.beta) * batch
        self.steps[site] = self.steps.get(site, 0) + 1
        return centred / divisor
        # --8<-- [end:normaliser]

    def state_dict(self) -> dict:
        return {"beta": self.beta, "mean_square": dict(self.mean_square), "steps": dict(self.steps)}

    def load_state_dict(self, state: dict) -> None:
        self.beta = float(state["beta"])
        self.mean_square, self.steps = dict(state["mean_square"]), dict(state["steps"])


def _downstream_costs(model_trace: Trace, guide_trace: Trace) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """ELBO, the surrogate's log-density part and each non-reparameterised site's downstream cost.

    As in Pyro's ``_compute_elbo``: costs are attributed to a site through provenance tracking.
    """
    elbo = surrogate_elbo = 0.0
    costs: dict[str, MultiFrameTensor] = defaultdict(MultiFrameTensor)
    for sign, trace in ((1.0, model_trace), (-1.0, guide_trace)):
        for site in trace.nodes.values():
            if site["type"] != "sample":
                continue
            elbo = elbo + sign * site["log_prob_sum"]
            if sign > 0:
                surrogate_elbo = surrogate_elbo + site["log_prob_sum"]
            elif not is_identically_zero(site["score_parts"].entropy_term):
                surrogate_elbo = surrogate_elbo - site["score_parts"].entropy_term.sum()
            for key in get_provenance(site["log_prob_sum"]):
                costs[key].add((site["cond_indep_stack"], sign * site["log_prob"]))
    return elbo, surrogate_elbo, costs


_AVERAGE_PREFIX = "__baseline_avg_downstream_cost_"  # Pyro's name for a site's decaying-average baseline


def _construct_baseline_in_place(node: str, guide_site: dict, signal: torch.Tensor):
    """Pyro's ``_construct_baseline``, with the decaying average kept in one tensor across steps.

    Pyro 1.9 stores each step's new average ``c <- beta c + (1 - beta) l`` through
    ``ParamStore.__setitem__``, i.e. as a new leaf tensor, and ``SVI.step`` hands every captured
    param to the optimiser, which builds (and keeps) an optimiser per tensor it has not seen, while
    the store keeps a name entry per tensor: memory grows every step (SBN 200-200-200 on MNIST
    reached 21 GB after 42 epochs and was killed). Here the new average is copied into the
    previous tensor and that tensor is put back, so the store and the optimiser see one object.
    The values, hence the estimator, are Pyro's.
    """
    store = pyro.get_param_store()
    name = _AVERAGE_PREFIX + node
    held = store[name].unconstrained() if name in store else None
    result = _construct_baseline(node, guide_site, signal)
    if held is not None and name in store:
        fresh = store[name].unconstrained()
        if fresh is not held:
            with torch.no_grad():
                held.copy_(fresh)
            del store[name]
            store[name] = held
    return result


class NormalisedTraceGraph_ELBO(TraceGraph_ELBO):  # noqa: N801 (Pyro's ELBO naming)
    """``TraceGraph_ELBO`` with NVIL's variance normalisation of each site's learning signal.

    Args:
        normaliser_beta: decay of the running mean square of the centred signal (NVIL: 0.8).
        normalise: divide by ``max(1, sqrt(v))``; ``False`` leaves the centred signal as it is
            (Pyro's estimator with the per-datum baseline units, and the decaying averages kept
            in place, so long runs do not grow in memory as with Pyro's own class).
        **kwargs: as for :class:`~pyro.infer.TraceGraph_ELBO` (``num_particles``, ...).

    The baselines are the guide's ``infer={"baseline": ...}`` options, interpreted by Pyro; see
    the module docstring for the equations and what the estimate is unbiased for.
    ``self.normaliser`` holds the running statistics (``state_dict``/``load_state_dict``).
    """

    def __init__(self, *, normaliser_beta: float = 0.8, normalise: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(normalise, bool):
            raise TypeError(f"normalise must be a bool, got {normalise!r}")
        self.normaliser = SignalNormaliser(normaliser_beta)
        self.normalise = normalise

    def _loss_and_surrogate_loss_particle(self, model_trace: Trace, guide_trace: Trace):
        elbo, surrogate_elbo, costs = _downstream_costs(model_trace, guide_trace)
        baseline_loss = 0.0
        # --8<-- [start:signal]
        for node, cost in costs.items():
            guide_site = guide_trace.nodes[node]
            scale = guide_site["scale"]
            signal = detach_provenance(cost.sum_to(guide_site["cond_indep_stack"])) / scale
            use_baseline, loss_term, baseline = _construct_baseline_in_place(node, guide_site, signal)
            if use_baseline:
                signal = signal - baseline
                baseline_loss = baseline_loss + loss_term
            centred = detach_provenance(signal).detach()
            if self.normalise:
                centred = self.normaliser(node, centred)
            score = guide_site["score_parts"].score_function
            surrogate_elbo = surrogate_elbo + (score * (scale * centred)).sum()
        # --8<-- [end:signal]
        return detach_provenance(elbo), detach_provenance(-surrogate_elbo + baseline_loss)
