"""Guides for BNNs that start where ordinary training starts: the deterministic network's initialisation.

Why not Pyro's defaults. ``AutoNormal(model)`` starts every weight at ``init_to_feasible``,
i.e. 0, with scale 0.1. Zero means make all hidden units of a layer alike (the symmetry that
ordinary initialisation breaks; only the guide's noise separates them), and a fixed 0.1 is
large next to a default weight of size ``1 / sqrt(3 fan_in)`` (0.03 at ``fan_in = 400``):
the noise of a pre-activation grows with the layer's width, so at initialisation a wide
network's draws differ from each other more than its output varies over the inputs. With
``init_to_median`` the means are medians of 15 prior draws, random values of size about 0.3
under a ``N(0, 1)`` prior, 5 to 10 times the default initialisation (``fan_in`` 100 to
300): pre-activations saturate and training stalls. (Both measured in ``docs/bnn.md``.)

What we do instead (:class:`MeanFieldGuide`): every weight's mean starts at the
deterministic layer's own default initialisation (kept by the Bayesian layers as
``weight_init``/``bias_init``, see :func:`init_to_deterministic`), and its scale at
``init_scale_ratio`` (default 0.1) times the root-mean-square of that layer's initial
weights (about ``1 / sqrt(3 fan_in)`` for torch's default). At the start the BNN is the
freshly initialised deterministic network with about 10% jitter per layer, whatever the
width; the usual training dynamics take over and the KL term grows the scales where the data
allow. Smaller ratios (1e-2, 1e-3) start so far below the posterior scales that the KL term
dominates the loss for hundreds of steps (scales grow by about a factor ``e^lr`` per Adam
step); measurements in ``docs/bnn.md``. Other latent sites (e.g. the noise precision) start
at their prior median with AutoNormal's scale ``init_scale``. :class:`MAPGuide` (point
estimates, ``AutoDelta``) starts at the same means: MAP under a Gaussian prior is training
with weight decay.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter

import torch
from pyro import poutine
from pyro.infer.autoguide import AutoDelta, AutoNormal, init_to_median
from torch import nn

from pyro_bdl.conventions import OBS_SITE
from pyro_bdl.layers.bayesian import BayesianLayer, bayesian_layers
from pyro_bdl.validation import check_positive


def layer_sites(model: nn.Module) -> dict[str, tuple[BayesianLayer, str]]:
    """``{site name: (layer, "weight" | "bias")}`` for the Bayesian layers of ``model``.

    Site names are the parameters' qualified names in ``model`` (``"net.0.weight"``), which is
    how ``PyroModule`` names the sites when ``model`` is the root module that is run.
    """
    sites = {}
    for path, layer in bayesian_layers(model):
        for param in layer.initial_values():
            sites[f"{path}.{param}" if path else param] = (layer, param)
    return sites


def init_to_deterministic(model: nn.Module, fallback: Callable[[dict], torch.Tensor] | None = None) -> Callable:
    """An ``init_loc_fn`` putting each Bayesian layer's weight and bias at its deterministic initialisation.

    Args:
        model: the root ``PyroModule`` whose sites are initialised.
        fallback: ``init_loc_fn`` for every other latent site (default ``init_to_median(num_samples=15)``).

    Returns:
        A callable ``site -> value`` for ``AutoNormal(init_loc_fn=...)``, ``MCMC``'s
        ``init_strategy`` or ``pyro.infer.autoguide.initialization.InitMessenger``.
    """
    fallback = init_to_median(num_samples=15) if fallback is None else fallback
    sites: dict[str, tuple[BayesianLayer, str]] | None = None

    def init_fn(site: dict) -> torch.Tensor:
        nonlocal sites
        if sites is None:
            sites = layer_sites(model)
        found = sites.get(site["name"])
        if found is None:
            return fallback(site)
        layer, param = found
        value = layer.initial_values()[param]
        shape = site["fn"].shape()
        if value.shape != shape[len(shape) - value.dim() :]:
            raise ValueError(f"site {site['name']!r} has shape {tuple(shape)}, its initial value {tuple(value.shape)}")
        return value.detach().clone().expand(shape)

    return init_fn


def _without_observations(model: nn.Module) -> Callable:
    """``model`` with its ``"obs"`` site hidden from the guide's prototype trace.

    An autoguide first run on ``model(x)`` without ``y`` (e.g. by ``Predictive`` before any
    training) would otherwise take the unobserved ``"obs"`` for a latent and fit a
    distribution to it.
    """
    return poutine.block(model, hide=[OBS_SITE])


def _rms(value: torch.Tensor) -> float:
    return float(value.detach().square().mean().sqrt())


class MeanFieldGuide(AutoNormal):
    """Mean-field Gaussian guide (``AutoNormal``) initialised from the deterministic network.

    Args:
        model: the BNN model (a ``PyroModule`` containing Bayesian layers), called as ``model(x, y)``.
        init_scale_ratio: initial standard deviation of every weight and bias of a Bayesian
            layer, relative to the root-mean-square of that layer's initial weights (default
            0.1; the module docstring says why).
        init_scale: initial standard deviation (unconstrained space) of every other latent site.
        init_loc_fn: initial means; default :func:`init_to_deterministic`.

    Sites are sampled as in ``AutoNormal`` (``"<name>_unconstrained"`` auxiliaries), so the
    reparameterisations of :mod:`pyro_bdl.bnn.reparameterization` apply to it.
    """

    def __init__(self, model: nn.Module, *, init_scale_ratio: float = 0.1, init_scale: float = 0.1,
                 init_loc_fn: Callable | None = None) -> None:  # fmt: skip
        self.init_scale_ratio = check_positive("init_scale_ratio", init_scale_ratio)
        self._bnn = (model,)  # a tuple, so the model is not registered as a submodule
        super().__init__(
            _without_observations(model),
            init_loc_fn=init_loc_fn or init_to_deterministic(model),
            init_scale=float(init_scale),
        )

    def _setup_prototype(self, *args, **kwargs) -> None:
        super()._setup_prototype(*args, **kwargs)
        references: dict[BayesianLayer, float] = {}
        latent = {
            name
            for name, site in self.prototype_trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"]
        }
        for name, (layer, _) in layer_sites(self._bnn[0]).items():
            if name not in latent:
                continue
            if layer not in references:
                references[layer] = _rms(layer.initial_values()["weight"])
            reference = references[layer]
            if reference == 0.0:
                raise ValueError(
                    f"the initial weights of the layer of site {name!r} are all zero, so init_scale_ratio has no "
                    "reference size; initialise the network's weights (or pass init_loc_fn and use AutoNormal)"
                )
            parent_name, _, leaf = name.rpartition(".")
            parent = attrgetter(parent_name)(self.scales) if parent_name else self.scales
            current = getattr(parent, leaf)
            # Assigning a tensor to an existing PyroParam updates it in place, in the param store too.
            setattr(parent, leaf, torch.full_like(current.detach(), self.init_scale_ratio * reference))


class MAPGuide(AutoDelta):
    """Point-estimate guide (``AutoDelta``) starting at the deterministic initialisation.

    With Gaussian priors, maximising the joint density is training with weight decay
    ``1 / (2 prior_scale^2)`` on the summed log-likelihood; used for the MC dropout baseline.

    Args:
        model: the BNN model.
        init_loc_fn: initial values; default :func:`init_to_deterministic`.
    """

    def __init__(self, model: nn.Module, *, init_loc_fn: Callable | None = None) -> None:
        super().__init__(_without_observations(model), init_loc_fn=init_loc_fn or init_to_deterministic(model))
