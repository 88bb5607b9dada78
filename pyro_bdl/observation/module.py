"""``ObservationModel``: a likelihood module that owns the observed site and its plate."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam

from pyro_bdl.conventions import DATA_PLATE, OBS_SITE
from pyro_bdl.observation.glm import (
    check_param,
    get_observation_model,
    mean_function,
    observation_distribution,
    param_values_or_defaults,
)


class ObservationModel(PyroModule):
    """The likelihood ``y ~ observation_distribution(name, eta)`` as a Pyro site.

    Args:
        name: a key of :data:`~pyro_bdl.observation.glm.OBSERVATION_MODELS`.
        event_dim: how many rightmost batch dimensions of the distribution are one event
            (``.to_event(event_dim)``), e.g. 1 for ``eta`` of shape ``(data, outputs)``
            scored jointly per data point.
        plates: names of the plates this module opens, outer to inner, over the batch
            dimensions right next to the event dimensions (default: the data plate
            :data:`~pyro_bdl.conventions.DATA_PLATE` at dim -1). A model that opens the data
            plate itself passes ``()``, or the names of inner plates only (BXPCA's
            ``("features",)``). Dimensions further left belong to the caller's plates.
        learn_params: register the model's parameters as constrained ``PyroParam`` (the
            default) or keep them fixed as buffers.
        num_classes: ``K`` for ``ordinal_logit`` when ``cutpoints`` is not given; the
            default cutpoints ``logit(k / K)`` make all categories equally likely at ``eta = 0``.
        **init_params: initial (or fixed) parameter values, ``scale``, ``concentration``
            or ``cutpoints`` (shapes and constraints in :mod:`pyro_bdl.observation.glm`).

    Shapes: ``eta`` is ``(*outer, *plates, *event)`` (plus a trailing ``K`` for
    ``categorical``), with one dimension per name in ``plates`` and ``len(event) == event_dim``;
    ``obs`` is ``(*outer, *plates, *event)``; ``obs_mask`` broadcasts to ``(*outer, *plates)``.
    The plates sit at dims ``-len(plates) .. -1``.
    """

    def __init__(
        self,
        name: str,
        *,
        event_dim: int = 0,
        plates: Sequence[str] = (DATA_PLATE,),
        learn_params: bool = True,
        num_classes: int | None = None,
        **init_params,
    ) -> None:
        super().__init__()
        spec = get_observation_model(name)
        if event_dim < 0:
            raise ValueError(f"event_dim must be non-negative, got {event_dim}")
        plates = tuple(plates)
        if not all(isinstance(plate, str) and plate for plate in plates) or len(set(plates)) != len(plates):
            raise ValueError(f"plates must be distinct non-empty plate names, got {plates!r}")
        values = param_values_or_defaults(spec, init_params, num_classes)
        self.model_name = name
        self.event_dim = event_dim
        self.plates = plates
        self._param_names = tuple(param.name for param in spec.params)
        for param in spec.params:
            value = check_param(spec, param, values[param.name]).detach().clone()
            if learn_params:
                setattr(self, param.name, PyroParam(value, constraint=param.constraint))
            else:
                self.register_buffer(param.name, value)

    @property
    def spec(self):
        return get_observation_model(self.model_name)

    def param_values(self, params: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The current (constrained) parameter values, by name, with ``params`` in place of the stored
        ones it names: per-datum values a network computes (an amortised ``scale``, broadcastable
        against ``eta``)."""
        unknown = sorted(set(params or {}) - set(self._param_names))
        if unknown:
            raise ValueError(f"{self.model_name}: params names {unknown}; it takes {list(self._param_names) or 'none'}")
        params = params or {}  # a replaced parameter is not read, so it is not put in the param store either
        return {name: params[name] if name in params else getattr(self, name) for name in self._param_names}

    def distribution(self, eta: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> dist.TorchDistribution:
        """``observation_distribution(name, eta, **self.param_values(params))``, before ``to_event``."""
        return observation_distribution(self.model_name, eta, **self.param_values(params))

    def mean(self, eta: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``E[y | eta]`` with the current parameters (see :func:`mean_function`)."""
        return mean_function(self.model_name, eta, **self.param_values(params))

    def forward(
        self,
        eta: torch.Tensor,
        obs: torch.Tensor | None = None,
        obs_mask: torch.Tensor | None = None,
        site_name: str = OBS_SITE,
        params: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Sample (``obs=None``) or observe ``y`` at site ``site_name`` inside this module's plates.

        Args:
            eta: natural parameter, shapes in the class docstring.
            obs: observations, or ``None`` to sample.
            obs_mask: boolean, ``True`` where ``obs`` is observed. Passed to Pyro's
                ``obs_mask``: missing entries are imputed by a latent site
                ``f"{site_name}_unobserved"`` (which a guide must cover) and add nothing
                to the observed log-likelihood. Their ``obs`` values are ignored (may be NaN).
            params: per-datum parameter values in place of the stored ones (see :meth:`param_values`).

        Returns:
            The value at the site, ``(*outer, *plates, *event)``.
        """
        fn = self.distribution(eta, params)
        if obs_mask is not None:
            if obs is None:
                raise ValueError("obs_mask needs obs: it marks which entries of obs are observed")
            obs_mask = torch.as_tensor(obs_mask, dtype=torch.bool, device=eta.device)
            entries = obs_mask.reshape(obs_mask.shape + (1,) * self.event_dim)
            obs = self._fill_missing(fn, obs, entries)
        return self._sample(site_name, fn.to_event(self.event_dim), obs, obs_mask)

    def observe_entries(
        self,
        eta: torch.Tensor,
        obs: torch.Tensor,
        entry_mask: torch.Tensor,
        site_name: str = OBS_SITE,
        params: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Observe ``obs`` only where ``entry_mask`` is True, entry by entry, even inside an event.

        Unlike ``obs_mask`` (whole data points, imputed by a latent site), missing entries are
        marginalised exactly: they add nothing to the log-likelihood and create no site. Their
        values in ``obs`` are ignored (may be NaN).

        Args:
            eta: natural parameter, as for :meth:`forward`.
            obs: observations, ``(*outer, *plates, *event)``.
            entry_mask: boolean, broadcastable to ``obs``'s shape, True where observed.
            site_name: the observed site's name.
            params: per-datum parameter values, as for :meth:`forward`.

        Returns:
            ``obs`` with missing entries filled by a value in the support.
        """
        entry_mask = torch.as_tensor(entry_mask, dtype=torch.bool, device=eta.device)
        fn = self.distribution(eta, params)
        filled = self._fill_missing(fn, obs, entry_mask)
        return self._sample(site_name, fn.mask(entry_mask).to_event(self.event_dim), filled, None)

    def _sample(
        self, site_name: str, fn: dist.TorchDistribution, obs: torch.Tensor | None, obs_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """``pyro.sample(site_name, fn, ...)`` inside this module's plates (``fn`` already has its event dims)."""
        batch_shape = fn.batch_shape
        plate_ndim = len(self.plates)
        if len(batch_shape) < plate_ndim:
            raise ValueError(
                f"eta must have at least len(plates) + event_dim = {plate_ndim + self.event_dim} batch "
                f"dimensions, got distribution batch shape {tuple(batch_shape) + tuple(fn.event_shape)}"
            )
        with ExitStack() as stack:
            for i, plate_name in enumerate(self.plates):
                dim = i - plate_ndim
                stack.enter_context(pyro.plate(plate_name, batch_shape[dim], dim=dim))
            return pyro.sample(site_name, fn, obs=obs, obs_mask=obs_mask)

    def _fill_missing(self, fn: dist.TorchDistribution, obs: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """Put a value in the support of ``fn`` (before ``to_event``) where ``observed`` is False."""
        filler = torch.zeros_like(obs) if self.spec.discrete else fn.mean.detach().to(obs.dtype)
        return torch.where(observed, obs, filler)

    def extra_repr(self) -> str:
        return f"{self.model_name!r}, event_dim={self.event_dim}, plates={self.plates}"
