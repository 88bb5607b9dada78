"""The state of a :func:`~pyro_bdl.inference.fit` run, and its early-stopping option.

:class:`FitState` holds everything a run needs to continue exactly where it stopped:
progress counters and history, the early-stopping bookkeeping, and, read from their owners
when :meth:`FitState.state_dict` is called, the parameters (Pyro's param store), the
optimizer (``PyroOptim.get_state``) and every random stream (:func:`pyro_bdl.checkpoint.rng_state`
plus the generator that shuffles the rows). A checkpoint is that dict saved with
:func:`pyro_bdl.checkpoint.save_checkpoint`:

=========================  ========================================================
key                        value
=========================  ========================================================
``format``                 :data:`CHECKPOINT_FORMAT`
``config``                 ``num_data``, ``num_tensors``, ``batch_size``, ``seed``
``epoch``                  completed epochs
``history``                the per-epoch dicts of :class:`FitResult`
``params``                 {param name: unconstrained value} of the model and guide
``optim``                  ``PyroOptim.get_state()`` (torch optimizer state dicts)
``rng``                    ``global`` (:func:`~pyro_bdl.checkpoint.rng_state`), ``shuffle``
``best_*``, ``bad_epochs``  early-stopping bookkeeping and the best parameters
``stopped_early``          whether patience ran out
=========================  ========================================================

Parameters are copied into the param store's existing tensors (``ParamStore.named_parameters``),
not swapped by ``ParamStore.set_state``: a swapped tensor would leave the ``nn.Parameter``
that a ``pyro.module`` / ``PyroModule`` network computes with behind, and would hide the
store's constraint objects from ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from pyro.optim import PyroOptim

from pyro_bdl.checkpoint import rng_state, set_rng_state
from pyro_bdl.validation import check_int

CHECKPOINT_FORMAT = "pyro_bdl.inference.fit/2"
"""Value of the ``format`` key that marks a checkpoint written by :func:`~pyro_bdl.inference.fit`."""


@dataclass
class FitResult:
    """What :func:`~pyro_bdl.inference.fit` did.

    Attributes:
        history: one dict per epoch: ``epoch`` (1-based), ``train_elbo``,
            ``validation_elbo`` (None without validation data), ``seconds``.
        best_epoch: epoch of the highest validation ELBO (None without validation data).
        best_validation_elbo: that ELBO, nats per datum.
        stopped_early: whether ``patience`` epochs passed without improvement.
    """

    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_validation_elbo: float | None = None
    stopped_early: bool = False


@dataclass(frozen=True)
class EarlyStopping:
    """Watch the validation ELBO: remember the best epoch, stop when it no longer improves.

    Args:
        patience: stop after this many epochs in a row without an improvement; None never
            stops (the best epoch is still tracked and restored).
        min_delta: an epoch improves when its validation ELBO exceeds the best so far by
            more than this (nats per datum, >= 0).
        restore_best: leave the parameters of the best epoch in the param store at the end.
    """

    patience: int | None = None
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self) -> None:
        check_int("patience", self.patience, allow_none=True)
        delta = self.min_delta
        if isinstance(delta, bool) or not isinstance(delta, int | float) or not 0.0 <= delta < math.inf:
            raise ValueError(f"min_delta must be a finite number >= 0, got {delta!r}")
        if not isinstance(self.restore_best, bool):
            raise TypeError(f"restore_best must be a bool, got {type(self.restore_best).__name__}")


class FitState:
    """Everything that changes while :func:`~pyro_bdl.inference.fit` runs, as one resumable object.

    Args:
        optim: the run's Pyro optimizer (its state is read and restored).
        param_names: the params of the model and guide, all in the param store.
        config: what must match for a checkpoint to belong to this run.
        shuffle: the generator that shuffles the rows each epoch.
    """

    def __init__(self, optim: PyroOptim, param_names: Sequence[str], config: dict, shuffle: torch.Generator) -> None:
        self.optim, self.param_names, self.config, self.shuffle = optim, tuple(param_names), dict(config), shuffle
        self.result = FitResult()
        self.epoch = 0
        self.bad_epochs = 0
        self.best_params: dict[str, torch.Tensor] | None = None

    def param_values(self) -> dict[str, torch.Tensor]:
        """Copies of the unconstrained values of the run's params."""
        store = dict(pyro.get_param_store().named_parameters())
        return {name: store[name].detach().clone() for name in self.param_names}

    def load_param_values(self, values: dict[str, torch.Tensor], source: str) -> None:
        """Copy saved unconstrained values into the param store's tensors, in place."""
        if not isinstance(values, dict) or set(values) != set(self.param_names):
            names = set(values) if isinstance(values, dict) else set()
            missing, unknown = sorted(set(self.param_names) - names), sorted(names - set(self.param_names))
            raise ValueError(
                f"{source} does not match this model and guide: params missing from it {missing}, "
                f"params it holds that the model and guide lack {unknown}"
            )
        store = dict(pyro.get_param_store().named_parameters())
        for name in self.param_names:
            target, value = store[name], values[name]
            if not isinstance(value, torch.Tensor) or value.shape != target.shape:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"{source}: param '{name}' has shape {shape}, the model needs {tuple(target.shape)}")
            with torch.no_grad():
                target.copy_(value)

    def record_validation(self, epoch: int, elbo: float, early_stopping: EarlyStopping) -> None:
        """Update the best epoch and the count of epochs without improvement."""
        result = self.result
        if result.best_validation_elbo is None or elbo > result.best_validation_elbo + early_stopping.min_delta:
            result.best_epoch, result.best_validation_elbo = epoch, elbo
            self.best_params = self.param_values()
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        patience = early_stopping.patience
        result.stopped_early = patience is not None and self.bad_epochs >= patience

    def restore_best(self) -> None:
        """Put the params of the best validation epoch back in the param store (if any were kept)."""
        if self.best_params is not None:
            self.load_param_values(self.best_params, "the best parameters")

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint dict (see the module docstring); loads with ``torch.load(weights_only=True)``."""
        result = self.result
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config,
            "epoch": self.epoch,
            "history": result.history,
            "params": self.param_values(),
            "optim": self.optim.get_state(),
            "rng": {"global": rng_state(), "shuffle": self.shuffle.get_state()},
            "best_epoch": result.best_epoch,
            "best_validation_elbo": result.best_validation_elbo,
            "best_params": self.best_params,
            "bad_epochs": self.bad_epochs,
            "stopped_early": result.stopped_early,
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "the state") -> None:
        """Restore params, optimizer, random streams and progress from :meth:`state_dict`.

        Raises:
            ValueError: ``state`` is not a fit state of this run (format, config, params), or
                the optimizer has already stepped (its state could not be replaced).
        """
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"{source} is not a checkpoint of pyro_bdl.inference.fit (format {state.get('format')!r}, expected "
                f"{CHECKPOINT_FORMAT!r}); point checkpoint_path elsewhere or pass resume=False (an example's --fresh) "
                "to overwrite it"
            )
        check_config(state, self.config, source)
        if self.optim.get_state():
            raise ValueError(
                "optim has already taken steps, so its state cannot be replaced by the checkpoint's; pass a fresh "
                "pyro.optim optimizer to resume"
            )
        self.load_param_values(state["params"], source)
        self.optim.set_state(state["optim"])  # consumed when each param's optimizer is created
        set_rng_state(state["rng"]["global"])
        self.shuffle.set_state(state["rng"]["shuffle"])
        self.result = FitResult(state["history"], state["best_epoch"], state["best_validation_elbo"],
                                state["stopped_early"])  # fmt: skip
        self.epoch, self.bad_epochs, self.best_params = state["epoch"], state["bad_epochs"], state["best_params"]


def check_config(state: dict[str, Any], config: dict, source: str = "the state") -> None:
    """Raise ValueError unless the checkpoint ``state`` was written by a run with this ``config``: called by
    :meth:`FitState.load_state_dict`, and on its own where a mismatch should stop a run before other work."""
    if state["config"] != config:
        raise ValueError(
            f"{source} was written by a run with {state['config']}, this run has {config}; "
            "pass resume=False (an example's --fresh) to start afresh"
        )
