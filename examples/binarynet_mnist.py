"""BinaryNet on MNIST (Courbariaux et al. 2016): the paper's MLP, trained and scored.

3 hidden layers of 4096 binary units (binary weights and activations), batch norm, dropout
on the input (0.2) and hidden units (0.5), square hinge loss, Adam with BinaryNet's
per-layer learning-rate scaling and an exponentially decaying learning rate (3e-3 to 3e-7
over the run), latent weights clipped to [-1, 1]. Pixels are scaled to [-1, 1]. The last
10,000 training images are the validation set, and the model with the best validation error
is scored on the test set. That model is also exported to packed weights and scored again,
running entirely on the XNOR kernels, so both numbers are reported.

Checkpoints are written after every epoch (``<out>/checkpoint.pt``); running the same
command again resumes from there. Results go to ``<out>/results.json``.

    python examples/binarynet_mnist.py --data ../shared/data/mnist            # the paper's net
    python examples/binarynet_mnist.py --hidden 256 --epochs 2 --limit 10000  # quick CPU run
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from pyro_bdl.checkpoint import load_checkpoint, save_checkpoint
from pyro_bdl.data import load_mnist, mnist_root_from_env, to_float, train_validation_split
from pyro_bdl.layers import attach_weight_clipping, binarynet_param_groups
from pyro_bdl.networks import BinaryNetMLP, export_packed_mlp, square_hinge_loss

CHECKPOINT_NAME = "checkpoint.pt"
RESULTS_NAME = "results.json"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, default=None, help="folder with the MNIST IDX files (default: $PYRO_BDL_DATA/mnist)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/binarynet_mnist"), help="checkpoint and results folder")
    parser.add_argument("--hidden", type=int, default=4096, help="binary units per hidden layer")
    parser.add_argument("--depth", type=int, default=3, help="hidden layers")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr-start", type=float, default=3e-3)
    parser.add_argument("--lr-end", type=float, default=3e-7)
    parser.add_argument("--dropout-in", type=float, default=0.2)
    parser.add_argument("--dropout-hidden", type=float, default=0.5)
    parser.add_argument("--validation", type=int, default=10000, help="last training images held out")
    parser.add_argument("--limit", type=int, default=None, help="use only the first LIMIT training images")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.hidden < 1 or args.batch_size < 1:
        parser.error("--epochs, --hidden and --batch-size must be positive")
    if not 0 < args.lr_end <= args.lr_start:
        parser.error("need 0 < --lr-end <= --lr-start")
    return args


def load_data(args: argparse.Namespace, device: torch.device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train / validation / test as ((n, 784) float in [-1, 1], (n,) labels) on ``device``."""
    root = args.data if args.data is not None else mnist_root_from_env()
    train_full = load_mnist(root, "train", limit=args.limit)
    if not 0 < args.validation < len(train_full.labels):
        raise ValueError(f"--validation must be between 1 and {len(train_full.labels) - 1}, got {args.validation}")
    train, valid = train_validation_split(train_full, args.validation)
    test = load_mnist(root, "test")
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
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    data = load_data(args, device)
    model = BinaryNetMLP(784, args.hidden, args.depth, 10, args.dropout_in, args.dropout_hidden).to(device)
    optimizer = torch.optim.Adam(binarynet_param_groups(model, args.lr_start))
    attach_weight_clipping(optimizer, model)
    gamma = (args.lr_end / args.lr_start) ** (1.0 / args.epochs)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    generator = torch.Generator().manual_seed(args.seed)
    checkpoint_path = args.out / CHECKPOINT_NAME
    state = {"epoch": 0, "history": [], "best_valid_error": math.inf, "best_model": None}
    if checkpoint_path.exists() and not args.fresh:
        saved = load_checkpoint(checkpoint_path, map_location=device)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        state = {key: saved[key] for key in state}
        print(f"resumed from {checkpoint_path} after epoch {state['epoch']}")
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
        save_checkpoint(
            checkpoint_path,
            {
                **state,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
            },
        )
        print(f"epoch {epoch:4d}  loss {loss:.4f}  valid error {100 * valid_error:.2f}%", flush=True)
    model.load_state_dict(state["best_model"])
    model.eval()
    test_error = error_rate(model, *data["test"])
    packed_error = error_rate(export_packed_mlp(model), *data["test"])
    results = {
        "test_error": test_error,
        "packed_test_error": packed_error,
        "best_valid_error": state["best_valid_error"],
        "epochs": args.epochs,
        "train_seconds_this_run": time.perf_counter() - start_time,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "config": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "history": state["history"],
    }
    results_path = args.out / RESULTS_NAME
    temporary = results_path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(results, indent=1))
    temporary.replace(results_path)
    print(f"test error {100 * test_error:.2f}% (packed XNOR inference: {100 * packed_error:.2f}%)")
    print(f"wrote {results_path}")
    return results


if __name__ == "__main__":
    main(parse_args())
