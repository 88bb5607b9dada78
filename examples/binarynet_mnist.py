"""BinaryNet on MNIST (Courbariaux et al. 2016): the paper's MLP, trained and scored.

3 hidden layers of binary units (binary weights and activations; 4096 per layer here, as in
the paper's Theano run that reached 0.96% test error; its Torch7 run reached 1.40% with
3 x 2048), batch norm, dropout on the input (0.2) and hidden units (0.5), square hinge loss,
Adam with BinaryNet's per-layer learning-rate scaling and an exponentially decaying learning
rate (3e-3 to 3e-7 over the run), latent weights clipped to [-1, 1]. Pixels are scaled to
[-1, 1]. The last 10,000 training images are the validation set, and the model with the best
validation error is scored on the test set. That model is also exported to packed weights and
scored again, running entirely on the XNOR kernels, so both numbers are reported.

A checkpoint is written after every epoch (``<out>/checkpoint.pt``: model, optimizer,
schedule, best model and every random stream, dropout's included); running the same command
again resumes there and ends exactly where an uninterrupted run would. Results go to
``<out>/results.json``.

    python examples/binarynet_mnist.py --device cuda                           # the paper's net (GPU)
    python examples/binarynet_mnist.py --hidden 256 --epochs 2 --limit 10000  # quick CPU run
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence

import torch
from tqdm import tqdm

from pyro_bdl.data import load_mnist, to_float
from pyro_bdl.experiment import (
    Checkpointer,
    add_common_arguments,
    add_mnist_split_arguments,
    arguments_record,
    check_mnist_split_arguments,
    data_root,
    environment,
    is_full_mnist_protocol,
    load_mnist_train_valid,
    make_parser,
    require_positive,
    run_main,
    setup,
    write_results,
)
from pyro_bdl.layers import attach_weight_clipping, binarynet_param_groups
from pyro_bdl.networks import BinaryNetMLP, export_packed_mlp, square_hinge_loss

CHECKPOINT_NAME = "checkpoint.pt"
RESULTS_NAME = "results.json"
PUBLISHED_TEST_ERROR = {2048: 0.0140, 4096: 0.0096}
"""Courbariaux et al. 2016, Table 1: Torch7 run with 3 x 2048 units, Theano run with 3 x 4096."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(
        parser, out="runs/binarynet_mnist", threads=1, device="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--hidden", type=int, default=4096, help="binary units per hidden layer")
    parser.add_argument("--depth", type=int, default=3, help="hidden layers")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr-start", type=float, default=3e-3)
    parser.add_argument("--lr-end", type=float, default=3e-7)
    parser.add_argument("--dropout-in", type=float, default=0.2)
    parser.add_argument("--dropout-hidden", type=float, default=0.5)
    add_mnist_split_arguments(parser, test_limit=False)
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    require_positive(parser, args, "epochs", "hidden", "depth", "batch_size", "threads")
    if not 0 < args.lr_end <= args.lr_start:
        parser.error(f"need 0 < --lr-end <= --lr-start, got {args.lr_end} and {args.lr_start}")
    check_mnist_split_arguments(parser, args)
    if args.validation == 0:
        parser.error("--validation must be positive: the best epoch is chosen on it")
    return args


def load_data(args: argparse.Namespace, device: torch.device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train / validation / test as ((n, 784) float in [-1, 1], (n,) labels) on ``device``."""
    train, valid = load_mnist_train_valid(args)
    test = load_mnist(data_root(args, "mnist"), "test")
    return {
        name: (to_float(part.images, -1.0, 1.0, flatten=True).to(device), part.labels.to(device))
        for name, part in (("train", train), ("valid", valid), ("test", test))
    }


@torch.no_grad()
def error_rate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of misclassified examples, evaluated in batches."""
    wrong = 0
    for start in range(0, len(labels), batch_size):
        scores = model(images[start : start + batch_size])
        wrong += int((scores.argmax(dim=1) != labels[start : start + batch_size]).sum())
    return wrong / len(labels)


def train_epoch(model, optimizer, images, labels, batch_size, generator, progress: bool, epoch: int) -> float:
    """One pass over shuffled minibatches; returns the mean loss."""
    model.train()
    order = torch.randperm(len(labels), generator=generator).to(images.device)
    batches = range(0, len(labels), batch_size)
    total = 0.0
    for start in tqdm(batches, desc=f"epoch {epoch}", disable=not progress, leave=False):
        index = order[start : start + batch_size]
        loss = square_hinge_loss(model(images[index]), labels[index])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} in epoch {epoch}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(index)
    return total / len(labels)


def main(args: argparse.Namespace) -> dict:
    device = setup(args)
    data = load_data(args, device)
    model = BinaryNetMLP(784, args.hidden, args.depth, 10, args.dropout_in, args.dropout_hidden).to(device)
    optimizer = torch.optim.Adam(binarynet_param_groups(model, args.lr_start))
    attach_weight_clipping(optimizer, model)
    gamma = (args.lr_end / args.lr_start) ** (1.0 / args.epochs)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    generator = torch.Generator().manual_seed(args.seed)
    checkpointer = Checkpointer(args.out / CHECKPOINT_NAME)
    state = {"epoch": 0, "history": [], "best_valid_error": math.inf, "best_model": None}
    saved = None if args.fresh else checkpointer.load(map_location=device)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        state = {key: saved[key] for key in state}
        print(f"resumed from {checkpointer.path} after epoch {state['epoch']}")
    train_images, train_labels = data["train"]
    start_time = time.perf_counter()
    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        loss = train_epoch(
            model, optimizer, train_images, train_labels, args.batch_size, generator, not args.no_progress, epoch
        )
        scheduler.step()
        model.eval()
        valid_error = error_rate(model, *data["valid"])
        state["history"].append({"epoch": epoch, "loss": loss, "valid_error": valid_error})
        if valid_error < state["best_valid_error"]:
            state["best_valid_error"] = valid_error
            state["best_model"] = {key: value.detach().clone() for key, value in model.state_dict().items()}
        state["epoch"] = epoch
        checkpointer.save(
            {
                **state,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
            }
        )
        print(f"epoch {epoch:4d}  loss {loss:.4f}  valid error {100 * valid_error:.2f}%", flush=True)
    model.load_state_dict(state["best_model"])
    model.eval()
    test_error = error_rate(model, *data["test"])
    packed_error = error_rate(export_packed_mlp(model), *data["test"])
    published = PUBLISHED_TEST_ERROR.get(args.hidden) if is_full_mnist_protocol(args) and args.depth == 3 else None
    results = {
        "test_error": test_error,
        "packed_test_error": packed_error,
        "best_valid_error": state["best_valid_error"],
        "epochs": args.epochs,
        "train_seconds_this_run": time.perf_counter() - start_time,
        "published_test_error": published,
        "environment": environment(device),
        "config": arguments_record(args),
        "history": state["history"],
    }
    print(f"test error {100 * test_error:.2f}% (packed XNOR inference: {100 * packed_error:.2f}%)")
    if published is not None:
        print(f"published reference (Courbariaux et al. 2016, 3 x {args.hidden}): {100 * published:.2f}%")
    write_results(args.out / RESULTS_NAME, results)
    return results


if __name__ == "__main__":
    run_main(main, parse_args)
