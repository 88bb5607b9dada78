"""Minibatch SVI with validation, early stopping and resumable checkpoints.

:func:`fit` runs ``pyro.infer.SVI`` over shuffled minibatches of a data set. Each step sees
a batch of B of the N rows, and every sample site inside the data plate (``"data"``) is scaled
by N / B (:mod:`pyro_bdl.inference.minibatch`, what a subsampled plate does), so the loss is an
unbiased estimate of the full-data loss: likelihood terms and local latents count N / B times,
global latents such as BNN weights once. Every ELBO it reports is per datum, in nats, higher
is better:

* ``train_elbo``: the batch-size weighted mean of ``-loss_b / N`` over the epoch's batches,
  i.e. ``(1/N) sum_n ELBO_n`` while the parameters move, evaluated on the transformed batches;
* ``validation_elbo``: :func:`~pyro_bdl.inference.scoring.elbo_per_datum` averaged over the
  validation rows when every site lies in the data plate (amortised models), otherwise
  ``-loss / N_val`` of the whole validation set (models with global latents; the
  ``KL(q(theta) || p(theta))`` term is then spread over N_val), averaged over
  ``validation_samples`` evaluations.

The run's state is a :class:`~pyro_bdl.inference.fit_state.FitState`
(``state_dict()`` / ``load_state_dict()``); with ``checkpoint_path`` it is saved atomically
after every epoch (:func:`pyro_bdl.checkpoint.save_checkpoint`, read back with
``torch.load(weights_only=True)``), so a run interrupted at any point (Ctrl-C, crash,
``kill -9``) resumes from the last completed epoch and, on CPU, ends bit-identical to an
uninterrupted run. The checkpoint's keys are listed in :mod:`~pyro_bdl.inference.fit_state`.
Early stopping is the option object :class:`~pyro_bdl.inference.fit_state.EarlyStopping`.

The sampling noise of SVI comes from torch's global generator (seed it with
``pyro.set_rng_seed``); ``seed`` seeds only the generator that shuffles the rows.
"""

from __future__ import annotations

import math
import os
import pickle
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.elbo import ELBO
from pyro.optim import PyroOptim
from tqdm.auto import tqdm

from pyro_bdl.checkpoint import load_checkpoint, save_checkpoint
from pyro_bdl.conventions import DATA_PLATE
from pyro_bdl.inference.fit_state import CHECKPOINT_FORMAT, EarlyStopping, FitResult, FitState
from pyro_bdl.inference.minibatch import DataPlateScaleMessenger
from pyro_bdl.inference.scoring import elbo_per_datum
from pyro_bdl.inference.traces import trace_layout
from pyro_bdl.validation import check_int

__all__ = ["CHECKPOINT_FORMAT", "EarlyStopping", "FitResult", "FitState", "fit"]

_VALIDATION_PARTICLES = 10
"""Validation particles vectorised at once (in blocks of ``batch_size`` rows)."""


def _as_tensors(name: str, data: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Check a data argument: tensors with a common, non-empty dim 0 and no NaN."""
    if isinstance(data, torch.Tensor):
        tensors, labels = (data,), [name]
    elif isinstance(data, Sequence) and not isinstance(data, str):
        tensors, labels = tuple(data), [f"{name}[{i}]" for i in range(len(data))]
    else:
        raise TypeError(f"{name} must be a tensor or a sequence of tensors, got {type(data).__name__}")
    if not tensors:
        raise ValueError(f"{name} must hold at least one tensor, got an empty sequence")
    for label, tensor in zip(labels, tensors, strict=True):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{label} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() == 0:
            raise ValueError(f"{label} must have the data points along dim 0, got a scalar")
        if (tensor.is_floating_point() or tensor.is_complex()) and torch.isnan(tensor).any():
            raise ValueError(f"{label} contains NaN; fit needs complete data (mask missing entries in the model)")
    sizes = {tensor.shape[0] for tensor in tensors}
    if len(sizes) > 1:
        shapes = ", ".join(f"{label}: {tuple(t.shape)}" for label, t in zip(labels, tensors, strict=True))
        raise ValueError(f"the tensors of {name} must agree on dim 0 (the data points), got {shapes}")
    if 0 in sizes:
        raise ValueError(f"{name} has no data points (dim 0 is 0)")
    return tensors


def _transformed(transform_batch: Callable[..., tuple], batch: tuple[torch.Tensor, ...]) -> tuple:
    out = transform_batch(*batch)
    if not isinstance(out, tuple | list):
        raise TypeError(
            f"transform_batch must return a tuple of model arguments, got {type(out).__name__} "
            "(wrap a single tensor as (x,))"
        )
    return tuple(out)


def _minibatched(fn: Callable, data_plate: str) -> Callable:
    """``fn`` taking the minibatch scale N / B of the data plate's sites as its first argument."""

    def minibatched(scale: float, *batch: Any) -> Any:
        with DataPlateScaleMessenger(data_plate, scale):
            return fn(*batch)

    return minibatched


def _rng_devices(tensors: Sequence[torch.Tensor]) -> list[int]:
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})


def _param_names(model: Callable, guide: Callable, batch: tuple) -> tuple[str, ...]:
    """Create the params of model and guide (one traced call) and name them."""
    with poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*batch)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*batch)
    names = [
        name for trace in (guide_trace, model_trace) for name, site in trace.nodes.items() if site["type"] == "param"
    ]
    return tuple(dict.fromkeys(names))


def _validation_elbo(model: Callable, guide: Callable, loss: ELBO, data: tuple[torch.Tensor, ...], samples: int,
                     batch_size: int, data_plate: str | None) -> float:  # fmt: skip
    """Per-datum validation ELBO (see the module docstring); ``data_plate`` None for global latents."""
    if data_plate is not None:
        elbo = elbo_per_datum(
            model,
            guide,
            *data,
            num_samples=samples,
            data_plate=data_plate,
            particle_chunk=min(samples, _VALIDATION_PARTICLES),
            data_chunk=batch_size,
        )
        return elbo.mean().item()
    with torch.no_grad():
        losses = [loss.loss(model, guide, *data) for _ in range(samples)]
    return -math.fsum(losses) / samples / data[0].shape[0]


def _early_stopping(early_stopping: EarlyStopping | None, patience: int | None, restore_best: bool,
                    validation: tuple | None) -> EarlyStopping:  # fmt: skip
    """The early-stopping option: ``early_stopping``, or the one ``patience`` / ``restore_best`` spell."""
    if early_stopping is None:
        early_stopping = EarlyStopping(patience=patience, restore_best=restore_best)
    elif not isinstance(early_stopping, EarlyStopping):
        raise TypeError(f"early_stopping must be an EarlyStopping or None, got {type(early_stopping).__name__}")
    elif patience is not None or restore_best is not True:
        raise ValueError("pass either early_stopping or patience/restore_best, not both")
    if early_stopping.patience is not None and validation is None:
        raise ValueError("patience needs validation_data to measure improvement")
    return early_stopping


def _resume(state: FitState, path: str | os.PathLike) -> None:
    try:
        saved = load_checkpoint(path)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(f"could not read the checkpoint {path} (corrupt or not a torch file): {error}") from error
    state.load_state_dict(saved, f"checkpoint {path}")


def fit(
    model: Callable,
    guide: Callable,
    train_data: torch.Tensor | Sequence[torch.Tensor],
    *,
    optim: PyroOptim,
    epochs: int,
    batch_size: int,
    loss: ELBO | None = None,
    validation_data: torch.Tensor | Sequence[torch.Tensor] | None = None,
    validation_samples: int = 1,
    early_stopping: EarlyStopping | None = None,
    patience: int | None = None,
    restore_best: bool = True,
    transform_batch: Callable[..., tuple] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = True,
    seed: int = 0,
    progress: bool = True,
    data_plate: str = DATA_PLATE,
) -> FitResult:
    """Train ``model`` and ``guide`` by minibatch SVI; see the module docstring for what is reported.

    Args:
        model: called as ``model(*batch)`` with the rows of each tensor of the data.
        guide: called like the model.
        train_data: (N, ...) tensor or tensors with the data points along dim 0.
        optim: a Pyro optimizer (``pyro.optim.Adam(...)``, ``ClippedAdam``, schedulers); a
            fresh one to resume from a checkpoint. For a ``torch.optim`` optimizer over the
            modules' parameters (and data-parallel training) use
            :func:`~pyro_bdl.inference.distributed.fit_module`.
        epochs: total number of passes over the data (a resumed run continues up to it).
        batch_size: rows per step, B; the last batch of an epoch may be smaller.
        loss: the ELBO to minimise; ``Trace_ELBO()`` by default.
        validation_data: (N_val, ...) tensor(s) like ``train_data``, scored after each epoch.
        validation_samples: guide draws per validation data point.
        early_stopping: an :class:`EarlyStopping` (patience, min_delta, restore_best) acting on
            the validation ELBO; by default ``EarlyStopping(patience, restore_best=restore_best)``.
        patience: with ``restore_best``, shorthand for ``early_stopping=EarlyStopping(patience,
            restore_best=restore_best)``; not combined with ``early_stopping``.
        restore_best: see ``patience``.
        transform_batch: ``f(*batch) -> tuple`` applied to each training minibatch only
            (for example dynamic binarisation); the validation data is used as given.
        checkpoint_path: file the :class:`FitState` is saved to, atomically, after every
            epoch; None keeps none.
        resume: continue from ``checkpoint_path`` if it exists (else it is overwritten).
        seed: seeds the generator that shuffles the rows each epoch.
        progress: show a tqdm progress bar.
        data_plate: name of the plate over data points, whose sites are scaled by N / B.

    Returns:
        The :class:`FitResult`; the trained params are in Pyro's param store.

    Raises:
        ValueError, TypeError: bad arguments, a checkpoint of another run or model, or a
            resume into an optimizer that has already stepped.
        RuntimeError: a non-finite loss.
    """
    train = _as_tensors("train_data", train_data)
    validation = None if validation_data is None else _as_tensors("validation_data", validation_data)
    if validation is not None and len(validation) != len(train):
        raise ValueError(f"validation_data must hold {len(train)} tensors like train_data, got {len(validation)}")
    if not isinstance(optim, PyroOptim):
        raise TypeError(
            f"optim must be a pyro.optim optimizer (PyroOptim), got {type(optim).__name__}; "
            "for a torch.optim optimizer use pyro_bdl.inference.fit_module"
        )
    loss = Trace_ELBO() if loss is None else loss
    if not isinstance(loss, ELBO):
        raise TypeError(f"loss must be a pyro.infer ELBO (e.g. Trace_ELBO()), got {type(loss).__name__}")
    check_int("epochs", epochs, 0)
    check_int("batch_size", batch_size, 1)
    check_int("validation_samples", validation_samples, 1)
    check_int("seed", seed, -(2**63))
    early_stopping = _early_stopping(early_stopping, patience, restore_best, validation)
    if transform_batch is not None and not callable(transform_batch):
        raise TypeError(f"transform_batch must be callable or None, got {type(transform_batch).__name__}")

    num_data = train[0].shape[0]
    with torch.random.fork_rng(devices=_rng_devices(train)):  # the setup leaves the global RNG as it was
        first = tuple(t[:batch_size] for t in train)
        first = first if transform_batch is None else _transformed(transform_batch, first)
        names = _param_names(model, guide, first)
        if batch_size < num_data and trace_layout(model, guide, *first, data_plate=data_plate).num_data is None:
            raise ValueError(
                f"batch_size={batch_size} < {num_data} rows needs the data plate '{data_plate}' in the model, "
                "to scale its sites by N / B; name the plate with data_plate= or pass batch_size >= N"
            )
        local = validation is not None and trace_layout(model, guide, *validation, data_plate=data_plate).is_local
    config = {"num_data": num_data, "num_tensors": len(train), "batch_size": batch_size, "seed": seed}
    state = FitState(optim, names, config, torch.Generator().manual_seed(seed))
    if checkpoint_path is not None and resume and os.path.exists(checkpoint_path):
        _resume(state, checkpoint_path)
    result = state.result

    svi = SVI(_minibatched(model, data_plate), _minibatched(guide, data_plate), optim, loss)
    batches_per_epoch = math.ceil(num_data / batch_size)
    remaining = 0 if result.stopped_early else max(epochs - state.epoch, 0)
    bar = tqdm(total=remaining * batches_per_epoch, disable=not progress, desc="fit", unit="batch", leave=False)
    try:
        for epoch in range(state.epoch + 1, state.epoch + remaining + 1):
            started = time.perf_counter()
            order = torch.randperm(num_data, generator=state.shuffle)
            elbo_sum = 0.0
            for step, start in enumerate(range(0, num_data, batch_size)):
                index = order[start : start + batch_size]
                batch = tuple(t[index] for t in train)
                if transform_batch is not None:
                    batch = _transformed(transform_batch, batch)
                value = svi.step(num_data / index.shape[0], *batch)
                if not math.isfinite(value):
                    raise RuntimeError(f"the loss is {value} at epoch {epoch}, batch {step}")
                elbo_sum -= value / num_data * index.shape[0]
                bar.update()
                bar.set_postfix(epoch=epoch, elbo=f"{elbo_sum / min(start + batch_size, num_data):.4g}")
            validation_elbo = None
            if validation is not None:
                validation_elbo = _validation_elbo(
                    model, guide, loss, validation, validation_samples, batch_size, data_plate if local else None
                )
                state.record_validation(epoch, validation_elbo, early_stopping)
            result.history.append(
                {
                    "epoch": epoch,
                    "train_elbo": elbo_sum / num_data,
                    "validation_elbo": validation_elbo,
                    "seconds": time.perf_counter() - started,
                }
            )
            state.epoch = epoch
            if checkpoint_path is not None:
                save_checkpoint(checkpoint_path, state.state_dict())
            if result.stopped_early:
                break
    finally:
        bar.close()
    if early_stopping.restore_best:
        state.restore_best()
    return result
