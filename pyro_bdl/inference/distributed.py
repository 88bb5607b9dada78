"""SVI through the ELBO as a ``torch.nn.Module``: a plain torch optimizer, and data parallel on ``torch.distributed``.

Pyro's own pattern for PyTorch optimizers, Lightning and DDP (``pyro.infer.elbo.ELBOModule``,
Pyro's ``examples/svi_lightning.py``): the pair (model, guide) and the loss become one
``nn.Module`` whose ``forward`` returns the differentiable ``-ELBO`` and whose
``parameters()`` are the model's and guide's (``PyroModule``, ``PyroParam``, torch modules);
one ``torch.optim`` optimizer steps them all. :class:`ELBOLoss` is that module with the
minibatch scale of :mod:`~pyro_bdl.inference.minibatch` as its first argument.

:func:`fit_module` trains it. Without a process group it is a single-process loop (the plain
torch-optimizer route). Under ``torchrun`` (:func:`init_from_env` starts the process group)
it is data parallel over the W ranks of the default group:

1. every rank builds the same model and guide (same seed), then one warm-up call on the same
   rows creates lazily made guide parameters (``AutoNormal``'s and friends) everywhere, and
   rank 0's values are broadcast to all ranks before the module is wrapped in
   ``DistributedDataParallel``;
2. each rank then reseeds its generators with ``base + rank`` (``base`` drawn on rank 0 and
   broadcast): identical initialisation, independent sampling noise;
3. each epoch ``DistributedSampler(shuffle=True, seed=seed)`` permutes the N rows the same
   way on every rank and deals them out in turn, so at step t the global batch is rows
   ``perm[t B : (t + 1) B]`` of the single-process run with batch ``B = W b`` and rank r holds
   every W-th of them (b rows);
4. rank r's loss scales its data-plate sites by ``N / b_t`` and DDP averages the gradients:

       (1/W) sum_r grad[ -global - (N / b_t) sum_{n in shard_r} local_n ]
         = grad[ -global - (N / B_t) sum_{n in batch_t} local_n ],      B_t = W b_t,

   the gradient of the single-process minibatch objective (global terms: priors and guide
   densities of global latents, counted once; local terms: likelihood and local latents),
   each global term's Monte Carlo estimate averaged over W independent draws.

``DistributedSampler`` pads the permutation to a multiple of W by repeating its first rows,
so when W does not divide N an epoch counts up to W - 1 rows twice (the same as any DDP
training with it); when W divides N the epoch is exactly the single-process one.
"""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import pyro
import torch
import torch.distributed as dist
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.elbo import ELBO
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from pyro_bdl.conventions import DATA_PLATE
from pyro_bdl.inference.fit import _as_tensors
from pyro_bdl.inference.fit_state import FitResult
from pyro_bdl.inference.minibatch import DataPlateScaleMessenger
from pyro_bdl.validation import check_int

__all__ = ["ELBOLoss", "Launch", "close_process_group", "fit_module", "init_from_env", "svi_step"]

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
"""What ``torchrun`` (``python -m torch.distributed.run``) sets in every process it starts."""


class ELBOLoss(nn.Module):
    """``-ELBO`` of a (model, guide) pair as a module: ``forward(scale, *batch)`` -> scalar tensor.

    Args:
        model: an ``nn.Module`` (``PyroModule``) called as ``model(*batch)``; its parameters are this module's.
        guide: an ``nn.Module`` (``PyroModule``, an autoguide) called as ``guide(*batch)``; likewise.
        loss: the Pyro ELBO (``Trace_ELBO()`` by default); ``loss.differentiable_loss`` is used.
        data_plate: the plate over data points whose sample sites are scaled by ``scale``.

    ``forward(scale, *batch)`` returns ``loss.differentiable_loss(model, guide, *batch)`` with
    every sample site in ``data_plate`` scaled by ``scale`` (N / B for B of N rows), a scalar.
    """

    def __init__(self, model: nn.Module, guide: nn.Module, loss: ELBO | None = None, data_plate: str = DATA_PLATE):
        super().__init__()
        for name, value in (("model", model), ("guide", guide)):
            if not isinstance(value, nn.Module):
                raise TypeError(
                    f"{name} must be a torch.nn.Module (a PyroModule or an autoguide) so that its parameters are "
                    f"module parameters, got {type(value).__name__}"
                )
        loss = Trace_ELBO() if loss is None else loss
        if not isinstance(loss, ELBO):
            raise TypeError(f"loss must be a pyro.infer ELBO (e.g. Trace_ELBO()), got {type(loss).__name__}")
        self.model, self.guide, self.loss, self.data_plate = model, guide, loss, data_plate

    def forward(self, scale: float, *batch: torch.Tensor) -> torch.Tensor:
        with DataPlateScaleMessenger(self.data_plate, scale):
            return self.loss.differentiable_loss(self.model, self.guide, *batch)


def svi_step(module: nn.Module, optimizer: torch.optim.Optimizer, scale: float, *batch: torch.Tensor) -> float:
    """One SVI step: zero the gradients, ``loss = module(scale, *batch)``, backward, ``optimizer.step()``."""
    optimizer.zero_grad(set_to_none=True)
    loss = module(scale, *batch)
    loss.backward()
    optimizer.step()
    return loss.item()


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a ``torchrun`` launch: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int
    world_size: int
    local_rank: int


def _env_int(name: str, minimum: int) -> int:
    raw = os.environ[name]
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer >= {minimum}, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"environment variable {name} must be an integer >= {minimum}, got {value}")
    return value


def init_from_env(backend: str | None = None, timeout_s: float = 1800.0) -> Launch | None:
    """Start the default process group from ``torchrun``'s environment; None when not launched by it.

    Reads ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` (and ``LOCAL_RANK``); with
    none of them set the process runs alone and nothing is started. ``backend`` defaults to
    ``"nccl"`` when CUDA is available, else ``"gloo"``; on CUDA the process uses GPU ``LOCAL_RANK``.

    Raises:
        ValueError: some of the variables are set and others missing, or they are not
            integers with ``0 <= RANK < WORLD_SIZE`` (a launch this process cannot join).
    """
    present = [name for name in LAUNCH_VARIABLES if os.environ.get(name)]
    if not present:
        return None
    missing = [name for name in LAUNCH_VARIABLES if name not in present]
    if missing:
        raise ValueError(
            f"incomplete torch.distributed launch: {', '.join(present)} set but {', '.join(missing)} missing; "
            "launch with `torchrun --nproc_per_node N script.py ...`, which sets all of "
            f"{', '.join(LAUNCH_VARIABLES)}"
        )
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if rank >= world_size:
        raise ValueError(f"environment variable RANK must lie in [0, {world_size - 1}] (WORLD_SIZE={world_size}), "
                         f"got {rank}")  # fmt: skip
    local_rank = _env_int("LOCAL_RANK", 0) if os.environ.get("LOCAL_RANK") else rank
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    if dist.get_world_size() != world_size:
        raise ValueError(f"the process group has {dist.get_world_size()} ranks but WORLD_SIZE={world_size}")
    return Launch(rank, world_size, local_rank)


def close_process_group() -> None:
    """Wait for every rank (``barrier``), then destroy the default process group; nothing without one.

    Call it at the end of a successful run: a rank that destroys its group and exits while
    another still works (rank 0 scoring and writing results) can make gloo abort the finished
    process at exit ("terminate called without an active exception"); the barrier keeps them together.
    Garbage is collected first: a DDP module left in a reference cycle keeps gloo work objects that
    hold tensors alive until interpreter shutdown, where freeing them can abort the process too
    (seen once in CI after the barrier was added).
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def _world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _check_module(module: ELBOLoss, batch: tuple, scale: float, minibatched: bool) -> None:
    """Refuse Pyro params outside the module (a torch optimizer over ``module.parameters()`` would skip
    them) and minibatches of a model without the data plate (nothing would be scaled by N / b)."""
    with poutine.block(), DataPlateScaleMessenger(module.data_plate, scale) as scaler:
        guide_trace = poutine.trace(module.guide).get_trace(*batch)
        model_trace = poutine.trace(poutine.replay(module.model, trace=guide_trace)).get_trace(*batch)
    if minibatched and not scaler.scaled_sites:
        raise ValueError(
            f"training on minibatches needs the data plate '{module.data_plate}' in the model, to scale its sites "
            "by N / b; name the plate with data_plate= or train on one process with batch_size >= N"
        )
    owned = {id(p) for p in module.parameters()}
    store = dict(pyro.get_param_store().named_parameters())
    for trace in (guide_trace, model_trace):
        for name, site in trace.nodes.items():
            if site["type"] == "param" and name in store and id(store[name]) not in owned:
                raise ValueError(
                    f"param '{name}' is not a parameter of the model or guide module; fit_module optimises "
                    "module.parameters() only (declare it as a PyroParam of a PyroModule)"
                )


def _reseed_per_rank(rank: int, world_size: int, device: torch.device) -> int:
    """Seed torch, numpy and random with ``base + rank``, ``base`` drawn on rank 0; returns ``base``."""
    base = torch.randint(0, 2**31, (1,), dtype=torch.int64)  # numpy needs seeds < 2**32
    if world_size > 1:
        base = base.to(device)
        dist.broadcast(base, src=0)
    seed = int(base.item())
    pyro.set_rng_seed(seed + rank)
    return seed


def fit_module(
    model: nn.Module,
    guide: nn.Module,
    train_data: torch.Tensor | Sequence[torch.Tensor],
    *,
    optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
    epochs: int,
    batch_size: int,
    loss: ELBO | None = None,
    seed: int = 0,
    transform_batch: Callable[..., tuple] | None = None,
    progress: bool = True,
    data_plate: str = DATA_PLATE,
) -> FitResult:
    """Minibatch SVI with a torch optimizer over :class:`ELBOLoss`; data parallel under a process group.

    Args:
        model: an ``nn.Module`` called as ``model(*batch)``; every Pyro param it uses must be a
            module parameter (``PyroParam`` / ``PyroModule``; checked).
        guide: an ``nn.Module`` called as ``guide(*batch)``; the same rule.
        train_data: (N, ...) tensor or tensors, the whole data set, the same on every rank.
        optimizer: ``params -> torch.optim.Optimizer``, e.g. ``functools.partial(torch.optim.Adam, lr=1e-3)``.
        epochs: passes over the data.
        batch_size: global rows per step, B = W b (a multiple of the world size W).
        loss: the Pyro ELBO, ``Trace_ELBO()`` by default.
        seed: seeds the ``DistributedSampler`` permutation (``seed + epoch``).
        transform_batch: ``f(*batch) -> tuple`` applied to each rank's rows (e.g. dynamic binarisation).
        progress: a tqdm bar on rank 0.
        data_plate: the plate over data points.

    Returns:
        :class:`~pyro_bdl.inference.FitResult` whose ``history`` holds per epoch ``epoch``,
        ``train_elbo`` (per datum, averaged over ranks as in :func:`~pyro_bdl.inference.fit`)
        and ``seconds``; the trained values are in the modules (identical on every rank).
        No validation, early stopping or checkpoints here (use :func:`~pyro_bdl.inference.fit`).
    """
    train = _as_tensors("train_data", train_data)
    check_int("epochs", epochs, 0)
    check_int("batch_size", batch_size, 1)
    check_int("seed", seed, 0)
    if not callable(optimizer):
        raise TypeError(f"optimizer must be a callable params -> torch.optim.Optimizer, got {type(optimizer).__name__}")
    if transform_batch is not None and not callable(transform_batch):
        raise TypeError(f"transform_batch must be callable or None, got {type(transform_batch).__name__}")
    rank, world_size = _world()
    if batch_size % world_size:
        raise ValueError(f"batch_size must be a multiple of the world size {world_size} (B = W b), got {batch_size}")
    local_batch = batch_size // world_size
    num_data = train[0].shape[0]
    device = train[0].device

    def rows(index: torch.Tensor) -> tuple:
        batch = tuple(t[index] for t in train)
        return batch if transform_batch is None else tuple(transform_batch(*batch))

    module = ELBOLoss(model, guide, loss, data_plate)
    first = rows(torch.arange(min(local_batch, num_data), device=device))
    with torch.no_grad():  # create lazily made params (autoguides) the same way on every rank
        module(num_data / first[0].shape[0], *first)
    _check_module(module, first, num_data / first[0].shape[0], minibatched=local_batch < num_data)
    params = list(module.parameters())
    if not params:
        raise ValueError("the model and guide have no parameters to train")
    step_module: nn.Module = module
    if world_size > 1:
        with torch.no_grad():
            for param in params:
                dist.broadcast(param, src=0)
        device_ids = (
            [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else None
        )
        step_module = DistributedDataParallel(module, device_ids=device_ids)
    _reseed_per_rank(rank, world_size, device)
    optim = optimizer(params)
    if not isinstance(optim, torch.optim.Optimizer):
        raise TypeError(f"optimizer(params) must return a torch.optim.Optimizer, got {type(optim).__name__}")

    sampler = DistributedSampler(range(num_data), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    steps = math.ceil(len(sampler) / local_batch)
    result = FitResult()
    bar = tqdm(total=epochs * steps, disable=not progress or rank != 0, desc="fit", unit="batch", leave=False)
    try:
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            sampler.set_epoch(epoch)
            order = torch.tensor(list(sampler), dtype=torch.long, device=device)
            elbo_sum = 0.0
            for start in range(0, order.shape[0], local_batch):
                batch = rows(order[start : start + local_batch])
                size = batch[0].shape[0]
                value = svi_step(step_module, optim, num_data / size, *batch)
                if not math.isfinite(value):
                    raise RuntimeError(
                        f"the loss is {value} at epoch {epoch}, rank {rank}, rows {start}:{start + size}"
                    )
                elbo_sum -= value / num_data * size * world_size / num_data
                bar.update()
            total = torch.tensor([elbo_sum], dtype=torch.float64, device=device)
            if world_size > 1:
                dist.all_reduce(total)
            result.history.append(
                {"epoch": epoch, "train_elbo": total.item() / world_size, "seconds": time.perf_counter() - started}
            )
    finally:
        bar.close()
    return result
