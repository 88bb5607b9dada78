"""Semi-supervised M2 (Kingma et al. 2014) on MNIST with a few labels; M1+M2 with --m1.

Protocol (Kingma, Mohamed, Rezende & Welling 2014, sec. 4.1): the first 50,000 training images
are the training set, of which ``--labels`` rows, class-balanced and drawn by ``--seed``, keep
their label and the rest are unlabelled; the last 10,000 training images are the validation set
(model selection: the epoch with the lowest validation error is kept); the test error is
measured once, on the 10,000 test images, with that epoch's classifier q(y | x).

Training: each iteration takes ``--batch-size`` unlabelled rows (one pass over them is an epoch)
and ``--labelled-batch`` labelled rows (cycled), and makes two plain ``SVI`` steps, one on each
part, weighted so that together they are an unbiased estimate of the paper's objective
``J^alpha`` over the whole training set (labelled rows by N_l / B_l, unlabelled rows by
N_u / B_u, through ``poutine.scale``); unlabelled labels are summed out by ``TraceEnum_ELBO``.
Two steps rather than one mixed batch because Pyro's ``obs_mask`` would enumerate the labelled
rows' labels too (exact, but K times the decoder work on them; ``benchmarks/bench_m2_step.py``).
The likelihood sees the images binarised afresh each step
(Bernoulli(intensity)); the classifier is evaluated on the intensities.

With ``--m1`` the images are first encoded by a DLGM (M1, 784-600-600-50 as in the paper,
trained here on all 50,000 training images without labels; see ``examples/dlgm_mnist.py``), and
M2 models the M1 posterior means with a Gaussian observation.

Checkpoints go to ``<out>/checkpoint.pt`` after every epoch; a rerun resumes there. Results
(validation curve, test error, settings, machine) go to ``<out>/results.json``, figures
(analogies, class-conditional samples) to ``<out>/*.png``.

    python examples/ssvae_mnist.py --data ../shared/data/mnist --labels 100 --epochs 50
    python examples/ssvae_mnist.py --labels 100 --m1 --m1-epochs 50 --epochs 100
    python examples/ssvae_mnist.py --limit 2000 --validation 500 --labels 20 --epochs 1   # smoke
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import SVI
from pyro.optim import ClippedAdam
from tqdm.auto import tqdm

from pyro_bdl.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from pyro_bdl.data import binarize_dynamic, load_mnist, mnist_root_from_env, to_float, train_validation_split
from pyro_bdl.data.semi_supervised import balanced_labelled_subset
from pyro_bdl.evaluation import categorical_entropy, expected_calibration_error
from pyro_bdl.figures.m2 import analogy_grid, class_samples_grid
from pyro_bdl.inference.fit import fit
from pyro_bdl.models import DLGM, M2, DLGMGuide, M2Guide
from pyro_bdl.models.m2 import analogies, class_conditional_samples, enumerated_elbo
from triton_kernels.files import atomic_write_text

CHECKPOINT_NAME = "checkpoint.pt"
RESULTS_NAME = "results.json"
KINGMA_2014 = {100: (11.97, 3.33), 600: (4.94, 2.59), 1000: (3.60, 2.40), 3000: (3.92, 2.18)}
"""Published test errors (%) of M2 / M1+M2 (Kingma et al. 2014, Table 1), full MNIST protocol."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=type("Formatter", (argparse.RawDescriptionHelpFormatter,
                                                               argparse.ArgumentDefaultsHelpFormatter), {})
    )  # fmt: skip
    parser.add_argument("--data", type=Path, default=None, help="MNIST folder (default: $PYRO_BDL_DATA/mnist)")
    parser.add_argument("--out", type=Path, default=Path("runs/ssvae_mnist"), help="results folder")
    parser.add_argument("--labels", type=int, default=100, help="labelled training rows, class-balanced")
    parser.add_argument("--seed", type=int, default=0, help="draws the labelled rows and seeds training")
    parser.add_argument("--epochs", type=int, default=50, help="passes over the unlabelled rows")
    parser.add_argument("--batch-size", type=int, default=200, help="unlabelled rows per step")
    parser.add_argument("--labelled-batch", type=int, default=100, help="labelled rows per step (cycled)")
    parser.add_argument("--latent-dim", type=int, default=50, help="size of z")
    parser.add_argument("--hidden", type=int, default=500, help="units of each network's hidden layer")
    parser.add_argument("--alpha", type=float, default=0.1, help="alpha / N of eq. 9 (paper: alpha = 0.1 N)")
    parser.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate")
    parser.add_argument("--clip-norm", type=float, default=10.0, help="gradient norm clip per parameter tensor")
    parser.add_argument("--classifier-dropout", type=float, default=0.0, help="dropout in q(y | x)")
    parser.add_argument("--m1", action="store_true", help="M1+M2: model the latent means of a DLGM (M1)")
    parser.add_argument("--baseline", action="store_true",
                        help="also train the same classifier on the labelled rows alone (supervised-only)")  # fmt: skip
    parser.add_argument("--m1-epochs", type=int, default=50, help="epochs of M1 training (with --m1)")
    parser.add_argument("--validation", type=int, default=10000, help="last training rows held out")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training images (smoke)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    args = parser.parse_args(argv)
    if args.limit is not None and args.validation >= args.limit:
        parser.error(f"--validation ({args.validation}) must be smaller than --limit ({args.limit})")
    for name in ("labels", "epochs", "batch_size", "labelled_batch", "latent_dim", "hidden"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def load_data(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    root = args.data if args.data is not None else mnist_root_from_env() / "mnist"
    train_all = load_mnist(root, "train", limit=args.limit)
    train, validation = train_validation_split(train_all, args.validation)
    test = load_mnist(root, "test")
    labelled = balanced_labelled_subset(train.labels, args.labels, 10, seed=args.seed)
    unlabelled = torch.ones(len(train.labels), dtype=torch.bool)
    unlabelled[labelled] = False
    images = to_float(train.images, flatten=True)
    return {
        "labelled_x": images[labelled], "labelled_y": train.labels[labelled], "unlabelled_x": images[unlabelled],
        "validation_x": to_float(validation.images, flatten=True), "validation_y": validation.labels,
        "test_x": to_float(test.images, flatten=True), "test_y": test.labels,
    }  # fmt: skip


def train_m1(data: dict, args: argparse.Namespace) -> DLGMGuide:
    """M1: a DLGM 784-600-600-50 (softplus) fitted on every training image, labels unused."""
    model = DLGM(784, (50,), ((600, 600),), activation="softplus", layer_scale="amortised", name="m1")
    guide = DLGMGuide.for_model(model, name="m1_guide")
    images = torch.cat([data["labelled_x"], data["unlabelled_x"]])
    fit(model, guide, images, epochs=args.m1_epochs, batch_size=100, optim=ClippedAdam({"lr": 1e-3}),
        transform_batch=lambda batch: (binarize_dynamic(batch),),
        checkpoint_path=args.out / "m1_checkpoint.pt", resume=not args.fresh, seed=args.seed)  # fmt: skip
    return guide


def m1_features(guide: DLGMGuide, images: torch.Tensor) -> torch.Tensor:
    """M1's posterior means of z given the intensities, (data, 50), in chunks."""
    return torch.cat([guide.posterior_means(chunk)[0] for chunk in images.split(2000)])


def steps(data: dict, args: argparse.Namespace, generator: torch.Generator) -> Iterator[tuple]:
    """One epoch of ``(x, y, row_scale)`` steps: unlabelled rows once, labelled rows cycled."""
    n_u, n_l = len(data["unlabelled_x"]), len(data["labelled_x"])
    unlabelled_order = torch.randperm(n_u, generator=generator)
    labelled_batch = min(args.labelled_batch, n_l)
    for start in range(0, n_u - args.batch_size + 1, args.batch_size):
        u = unlabelled_order[start : start + args.batch_size]
        lab = torch.randperm(n_l, generator=generator)[:labelled_batch]
        x = torch.cat([data["labelled_x"][lab], data["unlabelled_x"][u]])
        y = torch.cat([data["labelled_y"][lab], torch.full((len(u),), -1, dtype=torch.long)])
        scale = torch.cat([torch.full((len(lab),), n_l / len(lab)), torch.full((len(u),), n_u / len(u))])
        yield x, y, scale


def param_values() -> dict[str, torch.Tensor]:
    """The unconstrained values of every parameter in Pyro's store (tensors only: ``weights_only`` loads)."""
    return {name: value.detach().clone() for name, value in pyro.get_param_store().get_state()["params"].items()}


def restore_params(model: M2, guide: M2Guide, data: dict, values: dict[str, torch.Tensor]) -> None:
    """Copy saved unconstrained values into the live parameters, in place (PyroModules hold the same tensors).

    A blocked run of model and guide first registers every parameter in Pyro's store.
    """
    x, y = data["labelled_x"][:2], data["labelled_y"][:2]
    with poutine.block():
        guide(x, y)
        model(x, y)
    live = dict(pyro.get_param_store().named_parameters())
    if set(live) != set(values):
        raise ValueError(f"the checkpoint's parameters {sorted(set(values) ^ set(live))} do not match this model")
    with torch.no_grad():
        for name, param in live.items():
            param.copy_(values[name])


def error_rate(guide: M2Guide, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((torch.cat([guide.predict(chunk) for chunk in x.split(5000)]) != y).float().mean())


def supervised_baseline(guide_like: M2Guide, data: dict, args: argparse.Namespace) -> dict:
    """The same classifier trained on the labelled rows alone (cross-entropy, Adam, same epoch budget
    in steps), its epoch chosen on validation error: what the unlabelled rows must beat."""
    classifier = guide_like.classifier
    optimizer = torch.optim.Adam(classifier.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed + 1)
    n_l = len(data["labelled_x"])
    steps_per_epoch = len(data["unlabelled_x"]) // args.batch_size
    best = {"validation_error": float("inf")}
    for epoch in range(1, args.epochs + 1):
        classifier.train()
        for _ in range(steps_per_epoch):
            rows = torch.randperm(n_l, generator=generator)[: min(args.labelled_batch, n_l)]
            loss = F.cross_entropy(classifier(binarize_dynamic(data["labelled_x"][rows])), data["labelled_y"][rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        error = error_rate(guide_like, data["validation_x"], data["validation_y"])
        if error < best["validation_error"]:
            best = {"epoch": epoch, "validation_error": error,
                    "test_error": error_rate(guide_like, data["test_x"], data["test_y"])}  # fmt: skip
    return best


def calibration(guide: M2Guide, x: torch.Tensor, y: torch.Tensor) -> dict:
    """ECE (15 bins) and mean predictive entropy of q(y | x), on right and wrong predictions."""
    probs = torch.cat([guide.predict_proba(chunk) for chunk in x.split(5000)])
    entropy = categorical_entropy(probs)
    right = probs.argmax(-1) == y
    return {"ece": float(expected_calibration_error(probs, y)), "entropy_right": float(entropy[right].mean()),
            "entropy_wrong": float(entropy[~right].mean()) if bool((~right).any()) else None}  # fmt: skip


def main(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    data = load_data(args)
    binary_input = not args.m1
    if args.m1:
        m1 = train_m1(data, args)
        for key in ("labelled_x", "unlabelled_x", "validation_x", "test_x"):
            data[key] = m1_features(m1, data[key])
    dim = data["labelled_x"].shape[1]
    observation = {"observation": "bernoulli_logit"}
    if not binary_input:
        observation = {"observation": "gaussian", "observation_params": {"scale": torch.ones(dim)}}
    model = M2(dim, 10, args.latent_dim, (args.hidden,), activation="softplus", **observation)
    alpha = args.alpha * (len(data["labelled_x"]) + len(data["unlabelled_x"])) / len(data["labelled_x"])
    guide = M2Guide.for_model(model, alpha=alpha, classifier_dropout=args.classifier_dropout)
    # Clipping each step's gradient (per parameter tensor) to --clip-norm also evens out the labelled and
    # unlabelled steps, whose losses differ by 10x in scale; on validation (100 labels, 5 epochs) it gave
    # 26.7% error against 44.9% for plain Adam.
    optim = ClippedAdam({"lr": args.lr, "betas": (0.9, 0.999), "clip_norm": args.clip_norm})
    svi = SVI(lambda x, y, s: poutine.scale(model, scale=s)(x, y), lambda x, y, s: poutine.scale(guide, scale=s)(x, y),
              optim, enumerated_elbo())  # fmt: skip
    generator = torch.Generator().manual_seed(args.seed)
    state = {"epoch": 0, "history": [], "best": None}
    checkpoint = args.out / CHECKPOINT_NAME
    if checkpoint.exists() and not args.fresh:
        saved = load_checkpoint(checkpoint)
        restore_params(model, guide, data, saved["params"])
        optim.set_state(saved["optim"])  # consumed when each parameter's optimizer is first built
        set_rng_state(saved["rng"])
        generator.set_state(saved["generator"])
        state = {"epoch": saved["epoch"], "history": saved["history"], "best": saved["best"]}
        print(f"resumed from {checkpoint} at epoch {state['epoch']}")
    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        start, total = time.perf_counter(), 0.0
        batches = list(steps(data, args, generator))
        for x, y, scale in tqdm(batches, desc=f"epoch {epoch}", leave=False):
            x = binarize_dynamic(x) if binary_input else x
            labelled = y >= 0  # two steps: the labelled rows need no enumeration (bench_m2_step.py)
            total += svi.step(x[labelled], y[labelled], scale[labelled])
            total += svi.step(x[~labelled], y[~labelled], scale[~labelled])
        val_error = error_rate(guide, data["validation_x"], data["validation_y"])
        rows = len(data["labelled_x"]) + len(data["unlabelled_x"])
        record = {"epoch": epoch, "objective_per_row": total / len(batches) / rows,
                  "validation_error": val_error, "seconds": time.perf_counter() - start}  # fmt: skip
        state["history"].append(record)
        if state["best"] is None or val_error < state["best"]["validation_error"]:
            state["best"] = {**record, "params": param_values()}
        print(f"epoch {epoch}: validation error {100 * val_error:.2f}% ({record['seconds']:.0f} s)")
        save_checkpoint(checkpoint, {"params": param_values(), "optim": optim.get_state(),
                                     "rng": rng_state(), "generator": generator.get_state(), "epoch": epoch,
                                     "history": state["history"], "best": state["best"]})  # fmt: skip
    restore_params(model, guide, data, state["best"]["params"])
    test_error = error_rate(guide, data["test_x"], data["test_y"])
    test_calibration = calibration(guide, data["test_x"], data["test_y"])
    results = {
        "labels": args.labels, "seed": args.seed, "m1": args.m1, "epochs": args.epochs,
        "best_epoch": state["best"]["epoch"], "validation_error": state["best"]["validation_error"],
        "test_error": test_error, "test_calibration": test_calibration, "history": state["history"], "settings": vars(args) | {"out": str(args.out),
        "data": str(args.data)}, "machine": {"cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "pyro": pyro.__version__},
    }  # fmt: skip
    if args.baseline:
        baseline_guide = M2Guide.for_model(model, classifier_dropout=args.classifier_dropout)
        results["supervised_only"] = supervised_baseline(baseline_guide, data, args)
        print(f"supervised-only classifier on the {args.labels} labelled rows: test error "
              f"{100 * results['supervised_only']['test_error']:.2f}% (epoch {results['supervised_only']['epoch']})")  # fmt: skip
    full_protocol = args.limit is None and args.validation == 10000
    print(f"test error {100 * test_error:.2f}% (epoch {results['best_epoch']}, chosen on validation)")
    if full_protocol and args.labels in KINGMA_2014:
        m2, m1m2 = KINGMA_2014[args.labels]
        print(f"published (Kingma et al. 2014, {args.labels} labels): M2 {m2}%, M1+M2 {m1m2}%")
    if binary_input:
        originals = data["test_x"][:10]
        analogy_grid(originals, analogies(model, guide, originals), args.out / "analogies.png")
        class_samples_grid(class_conditional_samples(model, 8, generator=torch.Generator().manual_seed(0)),
                           args.out / "class_samples.png")  # fmt: skip
    atomic_write_text(args.out / RESULTS_NAME, json.dumps(results, indent=2))
    print(f"results written to {args.out / RESULTS_NAME}")
    return results


if __name__ == "__main__":
    main(parse_args())
