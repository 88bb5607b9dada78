"""Scoring a trained (model, guide) pair: importance weights, ELBO and IW log-likelihood.

For an amortised guide every datum n has its own latents z_n, so the log importance weight
of one guide draw splits into a term per datum::

    z_n^(s) ~ q(z_n | y_n)                                   s = 1..S
    log w_n^(s) = log p(y_n, z_n^(s)) - log q(z_n^(s) | y_n)   (S, N)

From the weights (Burda, Grosse & Salakhutdinov 2015, "Importance weighted autoencoders")::

    ELBO_n       = (1/S) sum_s log w_n^(s)                    <= log p(y_n)
    log p_S(y_n) = log (1/S) sum_s w_n^(s)                    <= log p(y_n), -> log p(y_n) as S grows

For global latents theta (for example Bayesian network weights) the weights do not split,
and :func:`joint_log_importance_weights` gives ``log p(y, theta) - log q(theta)`` per draw.

How it is computed, with Pyro's own machinery: the guide is traced inside one extra outer
``pyro.plate`` of particles placed left of every plate of the model (as
``vectorize_particles`` does), the model is replayed against that trace and
``Trace.compute_log_prob`` gives each site's log density (with any ``poutine.scale`` and
mask applied). Each site's log density is then summed over every dimension except the
particle dimension and, for per-datum weights, the dimension of the data plate.
Particles are drawn ``particle_chunk`` at a time and the data is cut into blocks of
``data_chunk`` rows, so memory stays bounded for ``S = 5000`` on a full test set; the
importance-weighted log-likelihood is accumulated with ``logsumexp`` chunk by chunk.

Requirements on the model and guide: they broadcast over extra leading batch dimensions
(``Predictive``/``vectorize_particles`` style), every latent site of the model is sampled
by the guide (guide sites absent from the model must be marked ``infer={"is_auxiliary":
True}``, as autoguides do; their density counts in ``log q``), and for per-datum scores every
site lies in the data plate, which is not subsampled. Enumerated discrete sites are not
supported. Everything here runs under ``torch.no_grad()``. Shapes are (particles, data)
throughout: S = ``num_samples``, N = size of the data plate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import is_validation_enabled
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_site_shape

PARTICLE_PLATE = "importance_particles"
"""Name of the outer plate that vectorises the particles; a model must not use it."""


@dataclass(frozen=True)
class TraceLayout:
    """What one trace of (model, guide) says about their plates.

    Attributes:
        data_plate: the name of the data plate that was looked for.
        max_plate_nesting: number of plate dimensions the model and guide use (so the
            particle plate goes at dim ``-(max_plate_nesting + 1)``).
        data_dim: the dim of the data plate (negative), or None if there is none.
        num_data: the size N of the data plate, or None if there is none.
        outside_data_plate: names of the sample sites (latent or observed) that are not in
            the data plate, in trace order; empty for a fully amortised model.
    """

    data_plate: str
    max_plate_nesting: int
    data_dim: int | None
    num_data: int | None
    outside_data_plate: tuple[str, ...]

    @property
    def is_local(self) -> bool:
        """True when there is a data plate and every site lies in it (per-datum scores exist)."""
        return self.num_data is not None and not self.outside_data_plate


def _sample_sites(trace: Trace) -> dict[str, dict]:
    """The sample sites that carry a density (``pyro.deterministic`` sites are left out)."""
    trace = prune_subsample_sites(trace)
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["infer"].get("_deterministic", False)
    }


def _paired_traces(model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple[Trace, Trace]:
    """Trace the guide, replay the model against it; check the two name the same latents."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    model_sites, guide_sites = _sample_sites(model_trace), _sample_sites(guide_trace)
    for name, site in model_sites.items():
        if not site["is_observed"] and name not in guide_sites:
            raise ValueError(f"latent site '{name}' of the model is not sampled by the guide")
    for name, site in guide_sites.items():
        if name not in model_sites:
            if site["infer"].get("is_auxiliary", False):
                continue  # e.g. AutoNormal's '<name>_unconstrained': part of log q, absent from the model
            raise ValueError(f"guide site '{name}' does not appear in the model")
        if model_sites[name]["is_observed"]:
            raise ValueError(f"guide site '{name}' is observed in the model")
    return model_trace, guide_trace


def trace_layout(model: Callable, guide: Callable, *args: Any, data_plate: str = "data", **kwargs: Any) -> TraceLayout:
    """Run guide and model once (no particles, no gradients, hidden from outer handlers).

    Args:
        model, guide: the Pyro model and guide, called as ``f(*args, **kwargs)``.
        data_plate: name of the plate over data points.

    Returns:
        The :class:`TraceLayout` (like Pyro's ELBO guessing ``max_plate_nesting``).
    """
    with torch.no_grad(), poutine.block():
        model_trace, guide_trace = _paired_traces(model, guide, args, kwargs)
    dims, data_frames, outside = [0], set(), []
    for trace in (model_trace, guide_trace):
        for name, site in _sample_sites(trace).items():
            frames = [frame for frame in site["cond_indep_stack"] if frame.vectorized]
            dims.extend(frame.dim for frame in frames)
            in_data = [frame for frame in frames if frame.name == data_plate]
            data_frames.update((frame.dim, frame.size, frame.full_size) for frame in in_data)
            if not in_data and name not in outside:
                outside.append(name)
    max_plate_nesting = -min(dims)
    if not data_frames:
        return TraceLayout(data_plate, max_plate_nesting, None, None, tuple(outside))
    if len(data_frames) > 1:
        raise ValueError(f"plate '{data_plate}' appears with different dims or sizes: {sorted(data_frames, key=str)}")
    ((data_dim, size, full_size),) = data_frames
    if full_size is not None and full_size != size:
        raise ValueError(
            f"plate '{data_plate}' is subsampled ({size} of {full_size}); scores need every data point, "
            "so pass the data to score instead of subsampling"
        )
    return TraceLayout(data_plate, max_plate_nesting, data_dim, int(size), tuple(outside))


def _site_log_density(site: dict, particle_dim: int, data_dim: int | None) -> torch.Tensor:
    """A site's log density summed over all dims but particles (and data): (P,) or (P, n)."""
    log_prob = site["log_prob"]
    if log_prob.dim() > -particle_dim:
        raise ValueError(
            f"site '{site['name']}' has log_prob of shape {tuple(log_prob.shape)} with dims left of every plate; "
            "declare batch dims with plates or event dims with .to_event()"
        )
    return sum_to_particles_and_data(log_prob, particle_dim, data_dim)


def sum_to_particles_and_data(log_prob: torch.Tensor, particle_dim: int, data_dim: int | None) -> torch.Tensor:
    """Sum batch log densities over every dim but the particles' (and the data plate's).

    Args:
        log_prob: batch-shaped log densities with at most ``-particle_dim`` dims (missing
            leading dims broadcast).
        particle_dim: the (negative) dim of the particle or draw plate.
        data_dim: the (negative) dim of the data plate to keep, or ``None`` to sum it too.

    Returns:
        (P,) or (P, n); P and n are 1 where ``log_prob`` broadcasts over them.
    """
    width = -particle_dim
    log_prob = log_prob.reshape((1,) * (width - log_prob.dim()) + tuple(log_prob.shape))
    if data_dim is None:
        return log_prob.reshape(log_prob.shape[0], -1).sum(-1)
    log_prob = log_prob.movedim(width + data_dim, 1)
    return log_prob.reshape(log_prob.shape[0], log_prob.shape[1], -1).sum(-1)


def _outside_data_plate(site: str, data_plate: str) -> ValueError:
    return ValueError(
        f"site '{site}' is not in the data plate '{data_plate}'; per-datum importance weights need every site "
        "of an amortised model inside it (for global latents use joint_log_importance_weights)"
    )


def _log_weights(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    layout: TraceLayout,
    num_particles: int,
    per_datum: bool,
) -> torch.Tensor:
    """Log weights of ``num_particles`` vectorised draws: (P, n) per datum, (P,) jointly (may broadcast)."""
    particle_dim = -(layout.max_plate_nesting + 1)

    def particles(fn: Callable) -> Callable:
        return pyro.plate(PARTICLE_PLATE, num_particles, dim=particle_dim)(fn)

    model_trace, guide_trace = _paired_traces(particles(model), particles(guide), args, kwargs)
    total: torch.Tensor | None = None
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        trace.compute_log_prob()
        for name, site in _sample_sites(trace).items():
            if is_validation_enabled():
                check_site_shape(site, max_plate_nesting=-particle_dim)
            data_dim = None
            if per_datum:
                frame = next((f for f in site["cond_indep_stack"] if f.name == layout.data_plate), None)
                if frame is None:
                    raise _outside_data_plate(name, layout.data_plate)
                data_dim = frame.dim
            term = sign * _site_log_density(site, particle_dim, data_dim)
            total = term if total is None else total + term
    if total is None:
        raise ValueError("the model and guide have no sample sites to score")
    return total


def _check_count(name: str, value: Any, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        expected = "a positive int or None" if allow_none else "a positive int"
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def _particle_counts(num_samples: int, particle_chunk: int) -> Iterator[int]:
    """Chunk sizes ``particle_chunk, ..., remainder`` that add up to ``num_samples``."""
    for start in range(0, num_samples, particle_chunk):
        yield min(particle_chunk, num_samples - start)


def _slice_rows(value: Any, num_data: int, start: int, stop: int) -> Any:
    """``value[start:stop]`` for tensors with ``num_data`` rows along dim 0; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == num_data:
        return value[start:stop]
    return value


def _data_blocks(
    args: tuple, kwargs: dict, num_data: int, data_chunk: int | None
) -> Iterator[tuple[int, int, tuple, dict]]:
    """``(start, stop, args, kwargs)`` for consecutive blocks of at most ``data_chunk`` rows."""
    if data_chunk is None or data_chunk >= num_data:
        yield 0, num_data, args, kwargs
        return
    values = [*args, *kwargs.values()]
    if not any(isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == num_data for v in values):
        raise ValueError(
            f"data_chunk={data_chunk} needs a tensor argument with {num_data} rows (the size of the data plate) "
            "along dim 0 to slice"
        )
    for start in range(0, num_data, data_chunk):
        stop = min(start + data_chunk, num_data)
        yield (
            start,
            stop,
            tuple(_slice_rows(v, num_data, start, stop) for v in args),
            {k: _slice_rows(v, num_data, start, stop) for k, v in kwargs.items()},
        )


def _local_weight_blocks(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    num_samples: int,
    data_plate: str,
    particle_chunk: int,
    data_chunk: int | None,
) -> tuple[int, Iterator[tuple[int, int, torch.Tensor]]]:
    """N and an iterator of ``(start, stop, log_weights (P, stop - start))`` blocks covering (S, N)."""
    _check_count("num_samples", num_samples)
    _check_count("particle_chunk", particle_chunk)
    _check_count("data_chunk", data_chunk, allow_none=True)
    if not isinstance(data_plate, str):
        raise TypeError(f"data_plate must be a plate name (str), got {type(data_plate).__name__}")
    layout = trace_layout(model, guide, *args, data_plate=data_plate, **kwargs)
    if layout.num_data is None:
        raise ValueError(
            f"no plate named '{data_plate}' in the model or guide; pass data_plate=<name of the data plate>"
        )
    if layout.outside_data_plate:
        raise _outside_data_plate(layout.outside_data_plate[0], data_plate)
    num_data = layout.num_data

    def blocks() -> Iterator[tuple[int, int, torch.Tensor]]:
        for start, stop, block_args, block_kwargs in _data_blocks(args, kwargs, num_data, data_chunk):
            for count in _particle_counts(num_samples, particle_chunk):
                weights = _log_weights(model, guide, block_args, block_kwargs, layout, count, per_datum=True)
                if weights.shape[-1] not in (1, stop - start):
                    raise ValueError(
                        f"the data plate '{data_plate}' has size {weights.shape[-1]} for a block of {stop - start} "
                        f"rows; every per-datum argument must have the N={num_data} rows along dim 0"
                    )
                yield start, stop, weights.expand(count, stop - start)

    return num_data, blocks()


@torch.no_grad()
def log_importance_weights(
    model: Callable,
    guide: Callable,
    *args: Any,
    num_samples: int,
    data_plate: str = "data",
    particle_chunk: int = 100,
    data_chunk: int | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Per-datum log importance weights ``log p(y_n, z_n) - log q(z_n | y_n)``.

    Args:
        model, guide: an amortised pair, called as ``f(*args, **kwargs)``; every sample site
            lies in the plate ``data_plate``.
        num_samples: S, guide draws per data point.
        data_plate: name of the plate over data points (size N, any dim).
        particle_chunk: draws vectorised at once, in an outer plate left of every model plate.
        data_chunk: rows per block; tensor arguments whose dim 0 has size N are sliced.
            None scores all N rows at once.

    Returns:
        (S, N) log weights; row s holds one joint draw for every datum.

    Raises:
        ValueError: bad counts, no data plate, a site outside it, or unmatched sites.
    """
    num_data, blocks = _local_weight_blocks(
        model, guide, args, kwargs, num_samples, data_plate, particle_chunk, data_chunk
    )
    out: torch.Tensor | None = None
    row = 0
    for start, stop, weights in blocks:
        if out is None:
            out = weights.new_empty(num_samples, num_data)
        out[row : row + weights.shape[0], start:stop] = weights
        row = (row + weights.shape[0]) % num_samples
    return out


@torch.no_grad()
def importance_log_likelihood(
    model: Callable,
    guide: Callable,
    *args: Any,
    num_samples: int = 5000,
    data_plate: str = "data",
    particle_chunk: int = 100,
    data_chunk: int | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Importance-weighted log-likelihood ``log (1/S) sum_s w_n^(s)`` per datum (Burda et al. 2015).

    Streams over particle and data chunks with ``logsumexp``, so memory holds one chunk of
    (``particle_chunk``, ``data_chunk``) weights, never all (S, N). Arguments as for
    :func:`log_importance_weights`.

    Returns:
        (N,) lower bounds on ``log p(y_n)`` that tighten as ``num_samples`` grows.
    """
    num_data, blocks = _local_weight_blocks(
        model, guide, args, kwargs, num_samples, data_plate, particle_chunk, data_chunk
    )
    total: torch.Tensor | None = None
    for start, stop, weights in blocks:
        if total is None:
            total = weights.new_full((num_data,), -math.inf)
        total[start:stop] = torch.logaddexp(total[start:stop], weights.logsumexp(0))
    return total - math.log(num_samples)


@torch.no_grad()
def elbo_per_datum(
    model: Callable,
    guide: Callable,
    *args: Any,
    num_samples: int = 1,
    data_plate: str = "data",
    particle_chunk: int = 100,
    data_chunk: int | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Monte Carlo ELBO per datum, ``(1/S) sum_s log w_n^(s)`` (nats, higher is better).

    Arguments as for :func:`log_importance_weights`; streams like
    :func:`importance_log_likelihood`.

    Returns:
        (N,) ELBO estimates; their sum estimates the ELBO of the whole data set.
    """
    num_data, blocks = _local_weight_blocks(
        model, guide, args, kwargs, num_samples, data_plate, particle_chunk, data_chunk
    )
    total: torch.Tensor | None = None
    for start, stop, weights in blocks:
        if total is None:
            total = weights.new_zeros(num_data)
        total[start:stop] += weights.sum(0)
    return total / num_samples


@torch.no_grad()
def joint_log_importance_weights(
    model: Callable, guide: Callable, *args: Any, num_samples: int, particle_chunk: int = 100, **kwargs: Any
) -> torch.Tensor:
    """Joint log importance weights ``log p(y, theta) - log q(theta)``, summed over all sites.

    For models with global latents (for example BNN weights), where the weights do not split
    per datum. ``log (1/S) sum_s w^(s)`` of these estimates the log evidence of the whole
    data set, and they are the raw material of PSIS diagnostics.

    Args:
        model, guide: called as ``f(*args, **kwargs)``; must broadcast over a leading
            particle dim.
        num_samples: S, guide draws.
        particle_chunk: draws vectorised at once.

    Returns:
        (S,) log weights.
    """
    _check_count("num_samples", num_samples)
    _check_count("particle_chunk", particle_chunk)
    layout = trace_layout(model, guide, *args, **kwargs)
    chunks = [
        _log_weights(model, guide, args, kwargs, layout, count, per_datum=False).expand(count)
        for count in _particle_counts(num_samples, particle_chunk)
    ]
    return torch.cat(chunks)
