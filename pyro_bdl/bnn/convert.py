"""``bayesianize``: turn an ordinary torch network into a Bayesian one.

The selected ``nn.Linear`` / ``nn.Conv{1,2,3}d`` layers are replaced by their Bayesian
twins (:mod:`pyro_bdl.layers.bayesian`), with the same hyperparameters, and the layer's current
weights kept as the twin's ``weight_init``/``bias_init``. Everything else becomes a
``PyroModule`` (``pyro.nn.module.to_pyro_module_``), so the parameters of layers that stay
deterministic are learned as point estimates through Pyro's param store (e.g. a network
with only its last layer Bayesian).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch import nn

from pyro_bdl.layers.bayesian import BAYESIAN_TWINS, BayesianLayer
from pyro_bdl.layers.priors import Prior

Which = str | Iterable[str] | Callable[[str, nn.Module], bool]


def _twin(module: nn.Module, prior: Prior | None) -> BayesianLayer:
    """The Bayesian twin of ``module``, on its device and dtype, starting from its current values."""
    weight = module.weight
    kwargs = {"bias": module.bias is not None, "device": weight.device, "dtype": weight.dtype, "prior": prior}
    if isinstance(module, nn.Linear):
        twin = BAYESIAN_TWINS[nn.Linear](module.in_features, module.out_features, **kwargs)
    else:
        twin = BAYESIAN_TWINS[type(module)](
            module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
            padding=module.padding, dilation=module.dilation, groups=module.groups,
            padding_mode=module.padding_mode, **kwargs,
        )  # fmt: skip
    for name, init in twin.initial_values().items():
        init.copy_(getattr(module, name).detach())
    return twin


def _eligible(net: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in net.named_modules() if type(m) in BAYESIAN_TWINS]


def _select(eligible: list[tuple[str, nn.Module]], which: Which) -> set[str]:
    names = [name for name, _ in eligible]
    if isinstance(which, str):
        if which == "all":
            return set(names)
        if which == "last":
            return set(names[-1:])
        raise ValueError(
            f"which must be 'all', 'last', an iterable of layer names or a predicate (name, module) -> bool; "
            f"got the string {which!r} (to select one layer by name pass a list, e.g. [{which!r}])"
        )
    if callable(which):
        return {name for name, module in eligible if which(name, module)}
    if isinstance(which, Iterable):
        chosen = list(which)
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            raise ValueError(f"which names unknown or unsupported layers {unknown}; eligible layers: {names}")
        return set(chosen)
    raise TypeError(f"which must be a string, an iterable of names or a callable, got {type(which).__name__}")


def bayesianize(net: nn.Module, prior: Prior | None = None, which: Which = "all") -> PyroModule:
    """A Bayesian copy of ``net`` (``net`` itself is left untouched).

    Args:
        net: a torch network built from ``nn.Linear`` / ``nn.Conv{1,2,3}d`` and other modules.
        prior: the prior of every selected weight and bias (default ``GaussianPrior(1.0)``).
        which: the layers to make Bayesian, among the eligible ``nn.Linear``/``nn.Conv*d``
            (exact types, in ``named_modules()`` order): ``"all"``; ``"last"`` (the last
            registered one, normally the output layer); an iterable of qualified names as in
            ``net.named_modules()`` (e.g. ``["0", "head.fc"]``); or a predicate
            ``(name, module) -> bool``.

    Returns:
        A ``PyroModule`` with the structure of ``net``: selected layers are
        :class:`~pyro_bdl.layers.BayesianLinear` etc. whose weights are latent sites
        named ``"<path>.weight"`` / ``"<path>.bias"``; other parameters are Pyro params.

    Raises:
        ValueError: no eligible layer, unknown names, an unknown string option, or nothing selected.
        TypeError: ``net`` is not an ``nn.Module`` or ``which`` has the wrong type.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
    if any(isinstance(m, BayesianLayer) for m in net.modules()):
        raise ValueError("net already contains Bayesian layers; bayesianize expects an ordinary torch network")
    net = copy.deepcopy(net)
    eligible = _eligible(net)
    if not eligible:
        supported = ", ".join(cls.__name__ for cls in BAYESIAN_TWINS)
        raise ValueError(f"net has no layer that can be made Bayesian (supported: {supported})")
    selected = _select(eligible, which)
    if not selected:
        raise ValueError(f"which selected no layer; eligible layers: {[name for name, _ in eligible]}")
    if "" in selected:  # the network is itself a single layer
        return _twin(net, prior)
    for name in sorted(selected):
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name)
        setattr(parent, child, _twin(getattr(parent, child), prior))
    to_pyro_module_(net)
    return net
