"""Data-parallel SVI of a DLGM on binarised MNIST across processes (torch.distributed, DDP).

Every process loads the same training images, builds the same DLGM (784-H-50, Bernoulli) and
guide from ``--seed``, and trains through :func:`pyro_bdl.inference.distributed.fit_module`:
a ``DistributedSampler`` deals each global batch of ``--batch-size`` rows out to the W ranks,
each rank scales its data plate by N / b and DDP averages the gradients, so the W-process run
optimises the single-process objective (docs/inference.md, "Data-parallel SVI"). Rank 0 then
scores the held-out ``--validation`` images (binarised once, seeded) and writes
``<out>/results.json``.

Launch with torchrun (one process per CPU core or GPU; gloo on CPU, nccl on GPU), or let the
script start its own local processes with ``--processes`` (it re-runs itself under
``python -m torch.distributed.run --standalone``); ``--processes 1`` trains in this process alone:

    torchrun --standalone --nproc_per_node 2 examples/ddp_svi.py --limit 12000 --epochs 5
    python examples/ddp_svi.py --processes 2 --limit 12000 --epochs 5
    python examples/ddp_svi.py --processes 1 --limit 12000 --epochs 5   # the same run on one process
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pyro
import torch
import torch.distributed as dist
from pyro.infer import TraceMeanField_ELBO

import pyro_bdl
from pyro_bdl.data import binarize_dynamic, to_float
from pyro_bdl.experiment import (
    UsageError,
    add_common_arguments,
    add_mnist_split_arguments,
    arguments_record,
    check_mnist_split_arguments,
    environment,
    load_mnist_train_valid,
    make_parser,
    require_positive,
    run_main,
    setup,
    write_results,
)
from pyro_bdl.inference import elbo_per_datum
from pyro_bdl.inference.distributed import LAUNCH_VARIABLES, Launch, close_process_group, fit_module, init_from_env
from pyro_bdl.models import DLGM, DLGMGuide

RESULTS_NAME = "results.json"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(parser, out="runs/ddp_svi", device="cpu")
    parser.add_argument("--processes", type=int, default=1, help="local processes to start (not under torchrun)")
    parser.add_argument("--backend", choices=["gloo", "nccl"], default=None, help="default: nccl on cuda, else gloo")
    parser.add_argument("--latent-dim", type=int, default=50)
    parser.add_argument("--hidden-dim", type=int, default=200, help="units of the one tanh layer on each side")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128, help="global rows per step, split over the ranks")
    parser.add_argument("--lr", type=float, default=1e-3)
    add_mnist_split_arguments(parser, test_limit=False)
    parser.add_argument("--elbo-samples", type=int, default=10, help="guide draws per validation image")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    require_positive(
        parser, args, "processes", "latent_dim", "hidden_dim", "epochs", "batch_size", "elbo_samples", "threads"
    )
    if args.lr <= 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if args.batch_size % args.processes:
        parser.error(f"--batch-size must be a multiple of --processes {args.processes}, got {args.batch_size}")
    check_mnist_split_arguments(parser, args)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def relaunch(args: argparse.Namespace) -> dict:
    """Run this script under ``python -m torch.distributed.run --standalone`` with ``--processes`` local processes."""
    if any(os.environ.get(name) for name in LAUNCH_VARIABLES):
        raise UsageError("--processes starts its own processes; under torchrun leave it out (or pass --processes 1)")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.processes}",
               str(Path(__file__).resolve()), *args.argv, "--processes", "1"]  # fmt: skip
    package_root = str(Path(pyro_bdl.__file__).resolve().parents[1])  # the children import this same checkout
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(args.threads)}
    print(f"launching {args.processes} processes: {' '.join(command[1:])}", flush=True)
    done = subprocess.run(command, env=env, check=False)
    if done.returncode:
        raise UsageError(f"the {args.processes} processes failed (torch.distributed.run exit code {done.returncode})")
    return json.loads((args.out / RESULTS_NAME).read_text())


def train_and_score(args: argparse.Namespace, rank: int, world_size: int, launch: Launch | None) -> dict | None:
    """Train on every rank; rank 0 scores the validation images and writes the results (returned, else None)."""
    if args.batch_size % world_size:
        raise UsageError(f"--batch-size must be a multiple of the world size {world_size}, got {args.batch_size}")
    if args.device == "cuda" and launch is not None:
        args.device = f"cuda:{launch.local_rank}"
    device = setup(args)  # same --seed on every rank: identical initialisation
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    train, valid = load_mnist_train_valid(args)
    x_train = to_float(train.images, flatten=True).to(device)
    model = DLGM(784, (args.latent_dim,), ((args.hidden_dim,),), "bernoulli_logit").to(device)
    guide = DLGMGuide.for_model(model).to(device)
    started = time.perf_counter()
    result = fit_module(model, guide, x_train, optimizer=functools.partial(torch.optim.Adam, lr=args.lr),
                        epochs=args.epochs, batch_size=args.batch_size, loss=TraceMeanField_ELBO(),
                        seed=args.seed, transform_batch=lambda x: (binarize_dynamic(x),),
                        progress=not args.no_progress)  # fmt: skip
    seconds = time.perf_counter() - started
    if rank != 0:
        return None
    report = {
        "model": f"DLGM 784-{args.hidden_dim}-{args.latent_dim} Bernoulli, TraceMeanField_ELBO, torch Adam",
        "world_size": world_size,
        "backend": dist.get_backend() if launch is not None else None,
        "train_images": len(x_train),
        "train_seconds": seconds,
        "history": result.history,
        "machine": environment(device),
        "arguments": {key: value for key, value in arguments_record(args).items() if key != "argv"},
    }
    if len(valid):
        fixed = torch.Generator().manual_seed(args.seed + 1)
        x_valid = torch.bernoulli(to_float(valid.images, flatten=True), generator=fixed).to(device)
        elbo = elbo_per_datum(model, guide, x_valid, num_samples=args.elbo_samples, data_chunk=500)
        report["validation_images"], report["validation_elbo"] = len(x_valid), elbo.mean().item()
    validation_elbo = report.get("validation_elbo", math.nan)
    print(f"{world_size} process(es): train ELBO {result.history[-1]['train_elbo']:.2f} nats/image after "
          f"{args.epochs} epochs, {seconds:.1f} s; validation ELBO {validation_elbo:.2f}")  # fmt: skip
    write_results(args.out / RESULTS_NAME, report)
    return report


def main(args: argparse.Namespace) -> dict | None:
    if args.processes > 1:
        return relaunch(args)
    launch = init_from_env(args.backend)
    if launch is None:
        return train_and_score(args, 0, 1, None)
    try:
        report = train_and_score(args, launch.rank, launch.world_size, launch)
    except BaseException:
        dist.destroy_process_group()  # no barrier: the other ranks may never reach it
        raise
    close_process_group()  # every rank leaves together, once rank 0 has written the results
    return report


if __name__ == "__main__":
    run_main(main, parse_args)
