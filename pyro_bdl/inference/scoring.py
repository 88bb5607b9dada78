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

How it is computed, with Pyro's own machinery: the guide and model run inside one extra
outer ``pyro.plate`` of particles placed left of every plate of the model (as
``vectorize_particles`` does) and :func:`pyro.infer.enum.get_importance_trace` pairs their
traces with each site's log density (any ``poutine.scale`` and mask applied, shapes checked
under validation). For per-datum weights each site's log density is summed over every
dimension except the particle dimension and the dimension of the data plate
(:func:`~pyro_bdl.inference.traces.sum_to_particles_and_data`); the joint weights are
Pyro's own :func:`pyro.infer.importance.vectorized_importance_weights`.
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
from typing import Any

import torch
from pyro.infer.enum import get_importance_trace
from pyro.infer.importance import vectorized_importance_weights

from pyro_bdl.conventions import DATA_PLATE
from pyro_bdl.inference.traces import (
    TraceLayout,
    particles,
    sample_sites,
    sum_to_particles_and_data,
    trace_layout,
)
from pyro_bdl.validation import check_int


def _outside_data_plate(site: str, data_plate: str) -> ValueError:
    return ValueError(
        f"site '{site}' is not in the data plate '{data_plate}'; per-datum importance weights need every site "
        "of an amortised model inside it (for global latents use joint_log_importance_weights)"
    )


def _per_datum_log_weights(
    model: Callable, guide: Callable, args: tuple, kwargs: dict, layout: TraceLayout, num_particles: int
) -> torch.Tensor:
    """Log weights of ``num_particles`` vectorised draws, (P, n) (either dim may broadcast as 1)."""
    dim = layout.particle_dim
    model_trace, guide_trace = get_importance_trace(
        "flat", -dim, particles(model, num_particles, dim), particles(guide, num_particles, dim), args, kwargs
    )
    total = torch.zeros(())
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for site in sample_sites(trace).values():
            total = total + sign * sum_to_particles_and_data(site["log_prob"], dim, layout.data_dim)
    if total.dim() != 2:
        raise ValueError("the model and guide have no sample sites to score")
    return total


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
    check_int("num_samples", num_samples)
    check_int("particle_chunk", particle_chunk)
    check_int("data_chunk", data_chunk, allow_none=True)
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
                weights = _per_datum_log_weights(model, guide, block_args, block_kwargs, layout, count)
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
    data_plate: str = DATA_PLATE,
    particle_chunk: int = 100,
    data_chunk: int | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Per-datum log importance weights ``log p(y_n, z_n) - log q(z_n | y_n)``.

    Args:
        model: with ``guide`` an amortised pair, called as ``f(*args, **kwargs)``; every sample
            site lies in the plate ``data_plate``.
        guide: likewise.
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
    data_plate: str = DATA_PLATE,
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
    data_plate: str = DATA_PLATE,
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
        model: called as ``f(*args, **kwargs)``; must broadcast over a leading
            particle dim.
        guide: likewise.
        num_samples: S, guide draws.
        particle_chunk: draws vectorised at once.

    Returns:
        (S,) log weights.
    """
    check_int("num_samples", num_samples)
    check_int("particle_chunk", particle_chunk)
    layout = trace_layout(model, guide, *args, **kwargs)
    chunks = []
    for count in _particle_counts(num_samples, particle_chunk):
        weights, _, _ = vectorized_importance_weights(
            model, guide, *args, num_samples=count, max_plate_nesting=layout.max_plate_nesting, **kwargs
        )
        chunks.append(weights.expand(count))
    return torch.cat(chunks)
