"""Restricted Boltzmann machine (Smolensky 1986; Hinton 2002) as an energy-based Pyro factor.

Energy of visible units ``v`` (D,) and hidden units ``h`` (H,), both binary here::

    E(v, h) = -a.v - b.h - v.W.h                      binary visible units
    E(v, h) = |v - a|^2 / 2 - b.h - v.W.h             Gaussian visible units (unit variance)

Summing the hidden units out gives the free energy, ``p(v) = exp(-F(v)) / Z``::

    F(v) = -a.v - sum_j softplus(b_j + v.W[:, j])     (|v - a|^2 / 2 for Gaussian units)

Generative process for data rows ``x`` (data, D)::

    for n in data:                                    plate "data", dim -1
        factor("rbm", -F(x_n))                        site :data:`FACTOR_SITE`

There is no observed :data:`~pyro_bdl.conventions.OBS_SITE`: the unnormalised density enters
as a factor, and its normaliser ``Z`` is what :class:`~pyro_bdl.inference.ContrastiveDivergence`
differentiates by sampling (``log Z`` is never in the trace). The factor site carries the
module and its visible values in ``site["infer"]`` (keys :data:`RBM_KEY`, :data:`VISIBLE_KEY`),
so the loss finds every RBM of a model, also one used as a factor inside a larger model
(:meth:`RBM.factor`, e.g. a prior over binary codes).

Conditionals (what block Gibbs sampling alternates, vectorised over chains)::

    p(h_j = 1 | v) = sigmoid(b_j + v.W[:, j])
    p(v_i = 1 | h) = sigmoid(a_i + W[i, :].h)         binary;  v | h ~ N(a + W.h, I)  Gaussian
"""

from __future__ import annotations

import itertools

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.util import is_validation_enabled
from pyro.nn import PyroModule
from torch import nn

from pyro_bdl.conventions import DATA_PLATE
from pyro_bdl.validation import check_choice, check_int, check_num_data, check_positive, check_table
from triton_kernels.cpu_bernoulli import bernoulli_bits
from triton_kernels.cpu_binary_rows import (
    MAX_DENSITY,
    BinaryColumns,
    binary_addmm,
    binary_columns,
    binary_kernels_enabled,
)

FACTOR_SITE = "rbm"
"""Default name of the factor site ``-F(v)``."""

RBM_KEY = "energy_model"
"""Key of ``site["infer"]`` holding the :class:`RBM` that made a factor site."""

VISIBLE_KEY = "visible"
"""Key of ``site["infer"]`` holding the visible rows (batch, D) of a factor site."""

ACTIVATION_KEY = "hidden_activation"
"""Key of ``site["infer"]`` holding the hidden pre-activations ``b + v.W`` (batch, H) of a factor site,
computed once for ``F(v)`` and reused by the CD loss to sample ``h | v`` (no second matmul)."""

COLUMNS_KEY = "binary_columns"
"""Key of ``site["infer"]`` holding :func:`~triton_kernels.cpu_binary_rows.binary_columns` of the visible rows
(the ones, column by column; None when the rows are not binary, denser than the kernels' limit
:data:`~triton_kernels.cpu_binary_rows.MAX_DENSITY`, or the kernels are off), listed once for
``b + v.W`` and reused by the CD loss for ``v^T s(v)``."""

PARAMS_KEY = "parameters"
"""Key of ``site["infer"]`` holding ``(weight, visible_bias, hidden_bias)`` as the factor read them (read once
per model call; the CD loss uses the same tensors)."""

VISIBLE_UNITS = ("bernoulli", "gaussian")

ENUMERATION_LIMIT = 24
"""Most hidden (or visible) units :meth:`RBM.exact_log_partition` enumerates (2^24 states)."""


class RBM(PyroModule):
    """An RBM with ``data_dim`` visible and ``hidden_dim`` binary hidden units.

    Args:
        data_dim: visible units D.
        hidden_dim: hidden units H.
        visible: ``"bernoulli"`` (binary, the default) or ``"gaussian"`` (unit variance;
            standardise the data first).
        init_scale: standard deviation of the initial weights (biases start at 0).
        name: the factor site's name and the prefix of the parameters' names in Pyro's param
            store (two RBMs in one model, or one param store, need two names).

    Parameters: ``weight`` (D, H), ``visible_bias`` (D,), ``hidden_bias`` (H,), in Pyro's param
    store as ``<name>.weight`` etc.
    """

    def __init__(self, data_dim: int, hidden_dim: int, *, visible: str = "bernoulli", init_scale: float = 0.01,
                 name: str = FACTOR_SITE) -> None:  # fmt: skip
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        super().__init__(name=name)
        self.data_dim = check_int("data_dim", data_dim)
        self.hidden_dim = check_int("hidden_dim", hidden_dim)
        self.visible = check_choice("visible", visible, VISIBLE_UNITS)
        check_positive("init_scale", init_scale)
        self.site_name = name
        self.weight = nn.Parameter(torch.randn(data_dim, hidden_dim) * init_scale)
        self.visible_bias = nn.Parameter(torch.zeros(data_dim))
        self.hidden_bias = nn.Parameter(torch.zeros(hidden_dim))

    # ----------------------------------------------------------------------- densities
    def params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(weight (D, H), visible_bias (D,), hidden_bias (H,))``, read once (through Pyro's param store
        inside an inference call)."""
        return self.weight, self.visible_bias, self.hidden_bias

    def check_visible(self, v: object, name: str = "x") -> torch.Tensor:
        """``v`` as a float table (rows, D), binary for Bernoulli visible units. The values (no NaN; only 0 and 1
        for binary units) are checked while Pyro's validation is on, its default; ``pyro.enable_validation(False)``
        skips those passes over the rows, as Pyro skips its own checks, and checks the type and shape only."""
        validate = is_validation_enabled()
        if (not validate and isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() == 2
                and v.shape[1] == self.data_dim):  # fmt: skip
            return v
        v = check_table(name, v, self.data_dim)
        if self.visible == "bernoulli" and validate and not bool(((v == 0) | (v == 1)).all()):
            raise ValueError(
                f"{name} must hold only 0 and 1 for a binary RBM (binarise it, e.g. torch.bernoulli(x)), "
                f"got values in [{float(v.min())}, {float(v.max())}]"
            )
        return v

    def hidden_activation(self, v: torch.Tensor) -> torch.Tensor:
        """``b + v.W`` (..., H) of visible rows ``v`` (..., D): one matmul, differentiable (binary rows that need
        no gradient take the binary-row kernel: :mod:`triton_kernels.cpu_binary_rows`)."""
        return _affine(self.hidden_bias, v, self.weight, self.visible == "bernoulli")

    def free_energy(self, v: torch.Tensor, activation: torch.Tensor | None = None) -> torch.Tensor:
        """``F(v)`` of visible rows ``v`` (..., D) -> (...); differentiable in the parameters and ``v``.

        ``activation``: ``hidden_activation(v)`` if already computed (it is not recomputed)."""
        return self.free_energy_from(v, self.hidden_activation(v) if activation is None else activation,
                                     self.visible_bias)  # fmt: skip

    def free_energy_from(self, v: torch.Tensor, activation: torch.Tensor, visible_bias: torch.Tensor) -> torch.Tensor:
        """``F(v)`` (...) from the pre-activations ``b + v.W`` (..., H) and the visible biases ``a`` (D,) given:
        ``-a.v - sum_j softplus(activation_j)`` (``|v - a|^2 / 2 - ...`` for Gaussian units)."""
        hidden = F.softplus(activation).sum(-1)
        if self.visible == "gaussian":
            return 0.5 * (v - visible_bias).pow(2).sum(-1) - hidden
        return -(v @ visible_bias) - hidden

    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``E(v, h)`` of visible (..., D) and hidden (..., H) rows -> (...)."""
        weight, visible_bias, hidden_bias = self.params()
        coupling = ((v @ weight) * h).sum(-1) + h @ hidden_bias
        if self.visible == "gaussian":
            return 0.5 * (v - visible_bias).pow(2).sum(-1) - coupling
        return -(v @ visible_bias) - coupling

    # ----------------------------------------------------------------------- Gibbs sampling
    def hidden_probs(self, v: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
        """``p(h = 1 | v)`` (..., H) of visible rows (..., D), at inverse temperature ``beta``."""
        weight, _, hidden_bias = self.params()
        return torch.sigmoid(beta * _affine(hidden_bias, v, weight, self.visible == "bernoulli"))

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """``E[v | h]`` (..., D) of hidden rows (..., H): probabilities, or the Gaussian mean."""
        weight, visible_bias, _ = self.params()
        activation = _affine(visible_bias, h, weight.T, True)
        return activation if self.visible == "gaussian" else torch.sigmoid(activation)

    @torch.no_grad()
    def sample_visible(self, h: torch.Tensor, params: tuple | None = None) -> torch.Tensor:
        """``v ~ p(v | h)`` (..., D) of hidden rows (..., H), with ``params`` as in :meth:`gibbs`; no gradient."""
        weight, visible_bias, _ = (p.detach() for p in (self.params() if params is None else params))
        return self.sample_visible_from_activation(_affine(visible_bias, h, weight.T, True))

    @torch.no_grad()
    def gibbs(self, v: torch.Tensor, steps: int = 1, params: tuple | None = None) -> torch.Tensor:
        """``steps`` sweeps of block Gibbs sampling (h | v, then v | h) from the chains ``v`` (chains, D).

        ``params``: ``(weight, visible_bias, hidden_bias)`` to sample with instead of the module's (e.g. the
        regular plus the fast parameters of FPCD). Returns the visible states after the last sweep, (chains, D);
        no gradient flows.
        """
        check_int("steps", steps, 1)
        weight, visible_bias, hidden_bias = (p.detach() for p in (self.params() if params is None else params))
        # the h -> v products read weight^T by rows: one transposed copy for all the sweeps, for the kernels
        weight_t = weight.T.contiguous() if steps > 1 and binary_kernels_enabled() else weight.T
        binary = self.visible == "bernoulli"
        for _ in range(steps):
            v = self._sweep_from_probs(torch.sigmoid(_affine(hidden_bias, v, weight, binary)), weight_t, visible_bias)
        return v

    @torch.no_grad()
    def sweep_from_activation(self, activation: torch.Tensor, params: tuple | None = None) -> torch.Tensor:
        """The rest of one Gibbs sweep from the hidden pre-activations ``b + v.W`` (chains, H) of the chains
        ``v``: ``h ~ p(h | v)``, then ``v' ~ p(v | h)`` (chains, D), with ``params`` as in :meth:`gibbs`. One
        matmul; no gradient flows."""
        return self.sweep_from_probs(torch.sigmoid(activation.detach()), params)

    @torch.no_grad()
    def sweep_from_probs(self, probs: torch.Tensor, params: tuple | None = None) -> torch.Tensor:
        """:meth:`sweep_from_activation` given ``p(h = 1 | v) = sigmoid(b + v.W)`` (chains, H) instead (when the
        caller needs them too, e.g. as CD's negative statistics: one sigmoid for both)."""
        weight, visible_bias, _ = (p.detach() for p in (self.params() if params is None else params))
        return self._sweep_from_probs(probs, weight.T, visible_bias)

    def _sweep_from_probs(self, probs: torch.Tensor, weight_t: torch.Tensor,
                          visible_bias: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """``v ~ p(v | h)`` with ``h ~ Bernoulli(probs)``; ``weight_t`` (H, D) is the weight transposed (binary
        ``h``: the kernel reads it by rows, copying a transposed view first if ``h`` is sparse enough)."""
        return self.sample_visible_from_activation(_affine(visible_bias, bernoulli(probs), weight_t, True))

    @torch.no_grad()
    def sample_visible_from_activation(self, activation: torch.Tensor) -> torch.Tensor:
        """``v ~ p(v | h)`` (..., D) from the visible pre-activations ``a + h.W^T`` (..., D):
        ``Bernoulli(sigmoid(.))``, or ``N(., 1)`` for Gaussian units; no gradient."""
        if self.visible == "gaussian":
            return activation + torch.randn_like(activation)
        return bernoulli(torch.sigmoid(activation))

    @torch.no_grad()
    def sample(self, num_chains: int, steps: int = 1000, *, init: torch.Tensor | None = None) -> torch.Tensor:
        """``num_chains`` visible rows (num_chains, D) after ``steps`` Gibbs sweeps from ``init``
        (default: uniform bits, or standard normals for Gaussian units)."""
        check_int("num_chains", num_chains)
        if init is None:
            shape = (num_chains, self.data_dim)
            dtype = self.weight.dtype
            init = torch.randn(shape, dtype=dtype) if self.visible == "gaussian" else bernoulli(
                torch.full(shape, 0.5, dtype=dtype))  # fmt: skip
        return self.gibbs(init, steps)

    # ----------------------------------------------------------------------- the Pyro factor
    def factor(self, v: torch.Tensor, name: str | None = None) -> None:
        """Add ``-F(v)`` (batch,) as the factor site ``name`` (default: the module's) to the running model.

        Call it inside the caller's plate over rows; the site is tagged for the CD loss.
        """
        name = self.site_name if name is None else name
        params = weight, visible_bias, hidden_bias = self.params()
        # the rows' ones listed once (None unless binary, v needing no gradient, kernels on): for b + v.W here
        # (by the kernel, differentiable in the parameters) and for v^T s(v) in the CD loss
        columns = binary_columns(v, MAX_DENSITY) if self.visible == "bernoulli" and v.dim() == 2 else None
        activation = _affine(hidden_bias, v, weight, columns is not None, columns)
        # pyro.factor's site, spelled out so that the tags ride in its infer dict (no extra handler)
        unit = dist.Unit(-self.free_energy_from(v, activation, visible_bias))
        infer = {"is_auxiliary": True, RBM_KEY: self, VISIBLE_KEY: v, ACTIVATION_KEY: activation, PARAMS_KEY: params,
                 COLUMNS_KEY: columns}  # fmt: skip
        pyro.sample(name, unit, obs=unit.sample(), infer=infer)

    def forward(self, x: torch.Tensor | None = None, *, obs_mask: torch.Tensor | None = None,
                num_data: int | None = None) -> torch.Tensor:  # fmt: skip
        """The RBM as a model: ``-F(x)`` as a factor in the data plate; returns the rows (data, D).

        ``x=None`` draws ``num_data`` rows by 1000 Gibbs sweeps first (not differentiable).
        ``obs_mask`` must be all True if given: an RBM has no exact marginal over missing units.
        """
        rows = check_num_data(x, num_data, obs_mask)
        if x is None:
            x = self.sample(rows)
        else:
            x = self.check_visible(x)
            if obs_mask is not None:
                check_table("x", x, self.data_dim, obs_mask)
                if not bool(obs_mask.all()):
                    raise ValueError("obs_mask must be all True for an RBM (no exact marginal over missing units), "
                                     f"got {int((~obs_mask).sum())} missing entries")  # fmt: skip
        with pyro.plate(DATA_PLATE, rows):
            self.factor(x)
        return x

    # ----------------------------------------------------------------------- scoring
    @torch.no_grad()
    def exact_log_partition(self, chunk: int = 2**14) -> float:
        """``log Z`` by enumerating the hidden states (or the visible states if fewer), in float64.

        Up to :data:`ENUMERATION_LIMIT` units on the enumerated side; ``chunk`` states at a time.
        """
        weight, visible_bias, hidden_bias = (p.detach().double() for p in self.params())
        gaussian = self.visible == "gaussian"
        if not gaussian and self.data_dim < self.hidden_dim:
            # enumerate v: log sum_v exp(a.v + sum_j softplus(b_j + v.W_j))
            return _log_sum_over_states(self.data_dim, chunk, lambda v: v @ visible_bias
                                        + F.softplus(v @ weight + hidden_bias).sum(-1))  # fmt: skip
        if self.hidden_dim > ENUMERATION_LIMIT:
            raise ValueError(f"exact_log_partition enumerates at most 2^{ENUMERATION_LIMIT} states, "
                             f"got {self.hidden_dim} hidden units")  # fmt: skip
        if gaussian:  # int exp(-|v - a|^2 / 2 + v.W.h) dv = (2 pi)^(D/2) exp(a.Wh + |Wh|^2 / 2)
            constant = 0.5 * self.data_dim * torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64))

            def log_terms(h: torch.Tensor) -> torch.Tensor:
                wh = h @ weight.T
                return h @ hidden_bias + wh @ visible_bias + 0.5 * wh.pow(2).sum(-1) + constant
        else:

            def log_terms(h: torch.Tensor) -> torch.Tensor:
                return h @ hidden_bias + F.softplus(h @ weight.T + visible_bias).sum(-1)

        return _log_sum_over_states(self.hidden_dim, chunk, log_terms)

    @torch.no_grad()
    def log_likelihood(self, v: torch.Tensor, log_partition: float) -> torch.Tensor:
        """``log p(v) = -F(v) - log Z`` (rows,) of rows ``v`` (rows, D) given ``log Z``."""
        return -self.free_energy(self.check_visible(v, "v")) - log_partition

    @torch.no_grad()
    def pseudo_log_likelihood(self, v: torch.Tensor) -> torch.Tensor:
        """Stochastic pseudo-log-likelihood (rows,): ``D log sigmoid(F(v~) - F(v))`` with one random bit of
        each row flipped (binary units only); a cheap training monitor, not ``log p(v)``."""
        if self.visible != "bernoulli":
            raise ValueError(f"pseudo_log_likelihood needs binary visible units, got visible={self.visible!r}")
        v = self.check_visible(v, "v")
        flip = torch.randint(self.data_dim, (v.shape[0],))
        flipped = v.clone()
        rows = torch.arange(v.shape[0])
        flipped[rows, flip] = 1 - flipped[rows, flip]
        return self.data_dim * F.logsigmoid(self.free_energy(flipped) - self.free_energy(v))

    @torch.no_grad()
    def reconstruction_error(self, v: torch.Tensor) -> torch.Tensor:
        """Squared error (rows,) between ``v`` (rows, D) and ``E[v | h]`` with ``h ~ p(h | v)``; a monitor only."""
        v = self.check_visible(v, "v")
        h = bernoulli(self.hidden_probs(v))
        return (self.visible_mean(h) - v).pow(2).sum(-1)


class RBMGuide(nn.Module):
    """The guide of an RBM used as a model on its own: empty, since the model has no latent site."""

    def forward(self, x: torch.Tensor | None = None, *, obs_mask: torch.Tensor | None = None,
                num_data: int | None = None) -> None:  # fmt: skip
        """Accepts the model's call and samples nothing."""


def bernoulli(probs: torch.Tensor) -> torch.Tensor:
    """Bits ``u < p`` (same shape and dtype as ``probs``), ``u`` uniform on [0, 1): Bernoulli(p) draws (the Gibbs
    sweeps' cost besides their matmuls). On CPU a compiled xoshiro256** loop seeded by one draw of torch's
    generator (:func:`~triton_kernels.cpu_bernoulli.bernoulli_bits`, about 4x faster than ``torch.rand_like``),
    else, or with the binary-row kernels switched off, ``torch.rand_like(p) < p``."""
    return bernoulli_bits(probs)


def _affine(bias: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, binary: bool = False,
            columns: BinaryColumns | None = None) -> torch.Tensor:  # fmt: skip
    """``bias + x @ weight`` for rows ``x`` (..., K): one fused ``addmm`` for a table (rows, K), or, with
    ``binary`` (``x`` may hold only 0 and 1: checked exactly), :func:`~triton_kernels.cpu_binary_rows.binary_addmm`,
    which sums the rows of ``weight`` at the ones where it can (``x`` needing no gradient, sparse enough) and is
    ``addmm`` otherwise. ``columns``: the listing of ``x``'s ones if made already."""
    if x.dim() != 2:
        return x @ weight + bias
    return binary_addmm(bias, x, weight, columns) if binary else torch.addmm(bias, x, weight)


def _log_sum_over_states(units: int, chunk: int, log_terms) -> float:
    """``log sum_s exp(log_terms(s))`` over all 2^units binary rows ``s`` (float64), ``chunk`` at a time."""
    check_int("chunk", chunk)
    bits = torch.arange(units, dtype=torch.int64)
    total = torch.tensor(-torch.inf, dtype=torch.float64)
    for start in range(0, 2**units, chunk):
        index = torch.arange(start, min(start + chunk, 2**units), dtype=torch.int64)
        states = ((index.unsqueeze(-1) >> bits) & 1).double()
        total = torch.logaddexp(total, torch.logsumexp(log_terms(states), 0))
    return float(total)


def all_states(units: int) -> torch.Tensor:
    """Every binary row of ``units`` bits, (2^units, units) float64, in binary counting order."""
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=units)), dtype=torch.float64).flip(-1)


__all__ = [
    "ACTIVATION_KEY", "COLUMNS_KEY", "ENUMERATION_LIMIT", "FACTOR_SITE", "PARAMS_KEY", "RBM", "RBM_KEY", "VISIBLE_KEY",
    "RBMGuide", "all_states", "bernoulli",
]  # fmt: skip
