"""The trace toolkit shared by scoring, fitting and diagnostics: where sites sit, and their log densities.

One traced run of a model (and its guide) is described by a :class:`TraceLayout`: every
sample site with its shape, event dims, plates and role (latent, observed, deterministic,
or a guide's auxiliary site), the plate nesting, and where the data plate
(:data:`pyro_bdl.conventions.DATA_PLATE` by default) sits. Scoring asks it whether per-datum
weights exist (every site in the data plate) and at which dim the particles go;
diagnostics ask it which sites to replay and whether latents are local (one per datum).

Paired (model, guide) traces come from Pyro's own
:func:`pyro.infer.enum.get_importance_trace` (guide traced, model replayed against it,
subsample sites pruned, log densities computed with scale and mask, shapes checked under
validation); :func:`trace_layout` adds an error, where Pyro only warns, for latent sites
the guide does not sample (:func:`check_guide_covers_model`). :func:`sum_to_particles_and_data` reduces a site's
batch log density to ``(particles,)`` or ``(particles, data)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import pyro
import torch
from pyro import poutine
from pyro.infer.enum import get_importance_trace
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import prune_subsample_sites

from pyro_bdl.conventions import DATA_PLATE

PARTICLE_PLATE = "importance_particles"
"""Name of the outer plate that vectorises particles or posterior draws; a model must not use it."""

Role = Literal["latent", "observed", "deterministic", "auxiliary"]


@dataclass(frozen=True)
class SiteInfo:
    """One sample site of a traced run.

    Attributes:
        name: the site name.
        role: ``"latent"``, ``"observed"``, ``"deterministic"`` (``pyro.deterministic``) or
            ``"auxiliary"`` (a guide site absent from the model, e.g. AutoNormal's
            ``"<name>_unconstrained"``).
        value_shape: shape of the value in an unbatched run, ``(*batch, *event)``.
        event_dim: number of rightmost event dimensions.
        plates: plate name of each batch dimension that has one, keyed by its negative dim.
        value: the observed value (the data) of an observed site, else ``None``.
        mask: the mask an observed site carries (``poutine.mask`` / ``obs_mask``), else ``None``.
    """

    name: str
    role: Role
    value_shape: torch.Size
    event_dim: int
    plates: dict[int, str]
    value: torch.Tensor | None = field(default=None, compare=False)
    mask: torch.Tensor | bool | None = field(default=None, compare=False)

    @property
    def batch_ndim(self) -> int:
        """Number of batch dimensions of the value."""
        return len(self.value_shape) - self.event_dim

    def dim_names(self) -> list[str]:
        """One name per dim of the value: the plate's name where a plate covers a batch dim,
        ``f"{name}_dim_{i}"`` otherwise (ArviZ's default naming)."""
        names = []
        for i in range(len(self.value_shape)):
            plate = self.plates.get(i - self.batch_ndim) if i < self.batch_ndim else None
            names.append(plate if plate is not None else f"{self.name}_dim_{i}")
        return names


@dataclass(frozen=True)
class TraceLayout:
    """What one traced run of a model (and guide) says about its sites and plates.

    Attributes:
        data_plate: the name of the data plate that was looked for.
        sites: every sample site, model sites first, in trace order.
        max_plate_nesting: number of plate dims the model and guide use.
        plate_dims: ``{plate name: negative dim}`` of every vectorised plate.
        data_dim: the dim of the data plate (negative), or None if there is none.
        num_data: the size N of the data plate, or None if there is none.
    """

    data_plate: str
    sites: dict[str, SiteInfo]
    max_plate_nesting: int
    plate_dims: dict[str, int]
    data_dim: int | None
    num_data: int | None

    def of_role(self, role: Role) -> dict[str, SiteInfo]:
        """The sites of one role, in trace order."""
        return {name: site for name, site in self.sites.items() if site.role == role}

    @property
    def latent(self) -> dict[str, SiteInfo]:
        return self.of_role("latent")

    @property
    def observed(self) -> dict[str, SiteInfo]:
        return self.of_role("observed")

    @property
    def deterministic(self) -> dict[str, SiteInfo]:
        return self.of_role("deterministic")

    def in_data_plate(self, name: str) -> bool:
        """Whether the site ``name`` lies inside the data plate (one value per datum)."""
        return self.data_dim is not None and self.sites[name].plates.get(self.data_dim) == self.data_plate

    @property
    def outside_data_plate(self) -> tuple[str, ...]:
        """Names of the sites (any role but deterministic) that are not in the data plate."""
        return tuple(
            name for name, site in self.sites.items() if site.role != "deterministic" and not self.in_data_plate(name)
        )

    @property
    def local_latents(self) -> tuple[str, ...]:
        """Latent sites inside the data plate: per-datum latents such as a DLGM's ``z_n``."""
        return tuple(name for name in self.latent if self.in_data_plate(name))

    @property
    def is_local(self) -> bool:
        """True when there is a data plate and every site lies in it (per-datum scores exist)."""
        return self.num_data is not None and not self.outside_data_plate

    @property
    def particle_dim(self) -> int:
        """Where a plate of particles goes for scoring: left of every plate, ``-(max_plate_nesting + 1)``."""
        return -(self.max_plate_nesting + 1)

    @property
    def draw_dim(self) -> int:
        """Where a plate of posterior draws goes for replay: left of every plate and every batch dim of every site."""
        widest = max([self.max_plate_nesting, *(site.batch_ndim for site in self.sites.values())])
        return -widest - 1


def sample_sites(trace: Trace) -> dict[str, dict]:
    """The sample sites of a trace, subsample sites pruned."""
    return {name: site for name, site in prune_subsample_sites(trace).nodes.items() if site["type"] == "sample"}


def _role(site: dict, model_sites: Mapping[str, dict] | None) -> Role:
    if site["infer"].get("_deterministic", False):
        return "deterministic"
    if model_sites is not None and site["name"] not in model_sites:
        return "auxiliary"
    return "observed" if site["is_observed"] else "latent"


def check_not_subsampled(traces: Iterable[Trace]) -> None:
    """Raise if any plate of the traces is subsampled: scores and diagnostics need every data point."""
    for trace in traces:
        for site in trace.nodes.values():
            for frame in site.get("cond_indep_stack", ()) if site["type"] == "sample" else ():
                if frame.full_size is not None and frame.full_size != frame.size:
                    raise ValueError(
                        f"plate '{frame.name}' is subsampled ({frame.size} of {frame.full_size}); scores and "
                        "diagnostics need every data point, so pass the data to score instead of subsampling"
                    )


def layout_of(model_trace: Trace, guide_trace: Trace | None = None, *, data_plate: str = DATA_PLATE) -> TraceLayout:
    """The :class:`TraceLayout` of a model trace (and the guide trace it was replayed against)."""
    check_not_subsampled([model_trace] if guide_trace is None else [model_trace, guide_trace])
    model_sites = sample_sites(model_trace)
    sites: dict[str, SiteInfo] = {}
    plate_dims: dict[str, int] = {}
    data_frames = set()
    traces = [(model_sites, None)]
    if guide_trace is not None:
        traces.append((sample_sites(guide_trace), model_sites))
    for trace_sites, model in traces:
        for name, site in trace_sites.items():
            frames = [frame for frame in site["cond_indep_stack"] if frame.vectorized]
            plate_dims.update((frame.name, frame.dim) for frame in frames)
            data_frames.update((frame.dim, frame.size) for frame in frames if frame.name == data_plate)
            if name in sites:
                continue
            role = _role(site, model)
            observed = role == "observed"
            sites[name] = SiteInfo(
                name=name,
                role=role,
                value_shape=torch.as_tensor(site["value"]).shape,
                event_dim=site["fn"].event_dim,
                plates={frame.dim: frame.name for frame in frames},
                value=site["value"].detach() if observed else None,
                mask=site["mask"] if observed else None,
            )
    if len(data_frames) > 1:
        raise ValueError(f"plate '{data_plate}' appears with different dims or sizes: {sorted(data_frames)}")
    data_dim, num_data = next(iter(data_frames)) if data_frames else (None, None)
    max_plate_nesting = -min([0, *plate_dims.values()])
    return TraceLayout(data_plate, sites, max_plate_nesting, plate_dims, data_dim, num_data)


def check_guide_covers_model(model_trace: Trace, guide_trace: Trace) -> None:
    """Raise ``ValueError`` where Pyro's ``check_model_guide_match`` only warns (unmatched latent sites)."""
    model_sites, guide_sites = sample_sites(model_trace), sample_sites(guide_trace)
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


def trace_layout(model: Callable, guide: Callable | None, *args, data_plate: str = DATA_PLATE, **kwargs) -> TraceLayout:
    """Run the guide and the model against it once (no gradients, hidden from outer handlers).

    Args:
        model: the Pyro model, called as ``model(*args, **kwargs)``.
        guide: the guide, called likewise; None traces the model alone (latents drawn from
            the prior).
        data_plate: name of the plate over data points.

    Returns:
        The :class:`TraceLayout` (like Pyro's ELBO guessing ``max_plate_nesting``).
    """
    with torch.no_grad(), poutine.block(), pyro.validation_enabled(False):
        if guide is None:
            return layout_of(poutine.trace(model).get_trace(*args, **kwargs), data_plate=data_plate)
        model_trace, guide_trace = get_importance_trace("flat", math.inf, model, guide, args, kwargs)
    check_guide_covers_model(model_trace, guide_trace)
    return layout_of(model_trace, guide_trace, data_plate=data_plate)


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
    if log_prob.dim() > width:
        raise ValueError(
            f"a log density of shape {tuple(log_prob.shape)} has dims left of the particle dim {particle_dim}; "
            "declare batch dims with plates or event dims with .to_event()"
        )
    log_prob = log_prob.reshape((1,) * (width - log_prob.dim()) + tuple(log_prob.shape))
    if data_dim is None:
        return log_prob.reshape(log_prob.shape[0], -1).sum(-1)
    log_prob = log_prob.movedim(width + data_dim, 1)
    return log_prob.reshape(log_prob.shape[0], log_prob.shape[1], -1).sum(-1)


def particles(fn: Callable, size: int, dim: int) -> Callable:
    """``fn`` run inside the plate :data:`PARTICLE_PLATE` of ``size`` at ``dim``."""
    return pyro.plate(PARTICLE_PLATE, size, dim=dim)(fn)
