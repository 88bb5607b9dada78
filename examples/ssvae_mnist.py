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
trained here on all 50,000 training images without labels by plain Adam for 100 epochs, seeded by
``--m1-seed``, so label draws can share one M1; see ``examples/dlgm_mnist.py``), and M2 (z of 4
dimensions by default) models M1's posterior means with a Gaussian observation (``--m1-min-std 0.1``:
only the latents whose means spread by more).

Checkpoints go to ``<out>/checkpoint.pt`` after every epoch; a rerun resumes there. Results
(validation curve, test error, settings, machine) go to ``<out>/results.json``, figures
(analogies, class-conditional samples) to ``<out>/*.png``.

    python examples/ssvae_mnist.py --data ../shared/data/mnist --labels 100 --epochs 50
    python examples/ssvae_mnist.py --labels 100 --m1 --m1-min-std 0.1 --epochs 80
    python examples/ssvae_mnist.py --limit 2000 --labels 20 --epochs 1 --hidden 64      # smoke
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence

import pyro
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import SVI
from pyro.optim import Adam, ClippedAdam, PyroOptim
from tqdm.auto import tqdm

from pyro_bdl.data import binarize_dynamic, load_mnist, to_float
from pyro_bdl.data.semi_supervised import balanced_labelled_subset
from pyro_bdl.evaluation import categorical_entropy, expected_calibration_error
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
from pyro_bdl.figures.m2 import analogy_grid, class_samples_grid
from pyro_bdl.inference import FitState, fit
from pyro_bdl.inference.fit_state import check_config
from pyro_bdl.models import DLGM, M2, DLGMGuide, M2Guide
from pyro_bdl.models.m2 import (
    INIT_LAYERS,
    OBSERVATION_SCALES,
    analogies,
    class_conditional_samples,
    class_scores,
    enumerated_elbo,
)

CHECKPOINT_NAME = "checkpoint.pt"
RESULTS_NAME = "results.json"
KINGMA_2014 = {100: (11.97, 3.33), 600: (4.94, 2.59), 1000: (3.60, 2.40), 3000: (3.92, 2.18)}
"""Published test errors (%) of M2 / M1+M2 (Kingma et al. 2014, Table 1), full MNIST protocol."""
PIXELS_LATENT_DIM, M1_LATENT_DIM = 50, 4
"""Default size of M2's z on pixels (the paper's 50) and on M1's features (chosen on validation, docs/m2.md)."""
M1_FEATURE_SETTINGS = ("m1_epochs", "m1_seed", "m1_lr", "m1_clip_norm", "m1_min_std")
"""The arguments that decide M1's features, recorded in M2's checkpoint."""
M2_TRAINING_SETTINGS = ("latent_dim", "batch_size", "labelled_batch", "alpha", "lr", "clip_norm", "classifier_dropout",
                        "labelled_every", "weighting", "pixels", "init_scale", "init_layers", "classifier_warmup",
                        "unlabelled_warmup", "m1_sample", "observation_scale")  # fmt: skip
"""The arguments that shape M2's training, recorded in its checkpoint when a run sets them off their defaults
(so checkpoints written before they were recorded still resume)."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(parser, out="runs/ssvae_mnist")
    parser.add_argument("--labels", type=int, default=100, help="labelled training rows, class-balanced")
    parser.add_argument("--epochs", type=int, default=50, help="passes over the unlabelled rows")
    parser.add_argument("--batch-size", type=int, default=200, help="unlabelled rows per step")
    parser.add_argument("--labelled-batch", type=int, default=100, help="labelled rows per step (cycled)")
    parser.add_argument("--latent-dim", type=int, default=None,
                        help="size of z (default 50 on pixels, 4 with --m1, chosen on validation)")  # fmt: skip
    parser.add_argument("--hidden", type=int, default=500, help="units of each network's hidden layer")
    parser.add_argument("--alpha", type=float, default=0.1, help="alpha / N of eq. 9 (paper: alpha = 0.1 N)")
    parser.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate")
    parser.add_argument("--clip-norm", type=float, default=10.0, help="clamp each gradient element to +-this")
    parser.add_argument("--classifier-dropout", type=float, default=0.0, help="dropout in q(y | x)")
    parser.add_argument("--labelled-every", type=int, default=1, help="take a labelled step every this many iterations")
    parser.add_argument("--weighting", choices=("count", "batch"), default="count",
                        help="row weights: N / B per part (unbiased), or 1 (Pyro's SS-VAE example)")  # fmt: skip
    parser.add_argument("--pixels", choices=("binarised", "intensities"), default="binarised",
                        help="what M2 on pixels sees: images binarised afresh each step, or the grey levels in [0, 1] "
                             "as Bernoulli 'observations' (Pyro's SS-VAE example)")  # fmt: skip
    parser.add_argument("--init-scale", type=float, default=None,
                        help="initial weights ~ N(0, s^2), biases 0 (Kingma et al.: 1e-3)")  # fmt: skip
    parser.add_argument("--init-layers", choices=INIT_LAYERS, default="all",
                        help="which layers --init-scale draws: all (Kingma et al.) or all but each network's output "
                             "layer, biases included (Pyro's SS-VAE example)")  # fmt: skip
    parser.add_argument("--classifier-warmup", type=int, default=0,
                        help="epochs in which q(y | x) learns from the labels only (the unlabelled term trains the "
                             "rest of the model with its soft labels)")  # fmt: skip
    parser.add_argument("--unlabelled-warmup", type=int, default=0, help="epochs to ramp the unlabelled weight to 1")
    parser.add_argument("--m1", action="store_true", help="M1+M2: model the latent means of a DLGM (M1)")
    parser.add_argument("--m1-epochs", type=int, default=100,
                        help="epochs of M1 training (with --m1; 100 chosen on validation, docs/m2.md)")  # fmt: skip
    parser.add_argument("--m1-seed", type=int, default=None,
                        help="seed of M1's training (default --seed); M1 sees no labels, so label draws that give "
                             "the same --m1-seed train the same M1 and can share its checkpoint")  # fmt: skip
    parser.add_argument("--m1-lr", type=float, default=1e-3, help="M1's Adam learning rate")
    parser.add_argument("--m1-clip-norm", type=float, default=None,
                        help="M1: clamp each gradient element to +-this (ClippedAdam); default plain Adam. The "
                             "earlier default, 10, clamps most elements of the N / B-scaled gradient and left M1 "
                             "far from converged (docs/m2.md, fourth round)")  # fmt: skip
    parser.add_argument("--m1-sample", action="store_true",
                        help="M1+M2: train M2 on draws from M1's q(z | x), redrawn each step (Kingma et al.'s code), "
                             "not on its means")  # fmt: skip
    parser.add_argument("--m1-min-std", type=float, default=0.0,
                        help="M1+M2: keep only M1 latents whose mean varies across images by more than this "
                             "(Kingma et al.'s code: 0.1)")  # fmt: skip
    parser.add_argument("--observation-scale", choices=OBSERVATION_SCALES, default="learned",
                        help="M1+M2: the scale of M2's Gaussian p(x | y, z), one learned per feature or output by "
                             "the decoder for each row (amortised, Kingma et al.'s code)")  # fmt: skip
    parser.add_argument("--baseline", action="store_true", help="also train the classifier on the labels alone")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_mnist_split_arguments(parser, test_limit=False)
    args = parser.parse_args(argv)
    if args.latent_dim is None:
        args.latent_dim = M1_LATENT_DIM if args.m1 else PIXELS_LATENT_DIM
    if args.m1_seed is None:
        args.m1_seed = args.seed
    require_positive(
        parser,
        args,
        "labels",
        "epochs",
        "batch_size",
        "labelled_batch",
        "latent_dim",
        "hidden",
        "m1_epochs",
        "m1_lr",
        "m1_clip_norm",
        "threads",
        "labelled_every",
    )
    for name in ("classifier_warmup", "unlabelled_warmup"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.observation_scale != "learned" and not args.m1:
        parser.error("--observation-scale applies to M1+M2's Gaussian features: it needs --m1")
    if args.labels % 10:
        parser.error(f"--labels must be a multiple of the 10 classes, got {args.labels}")
    check_mnist_split_arguments(parser, args)
    if args.validation == 0:
        parser.error("--validation must be positive: the best epoch is chosen on it")
    return args


def load_data(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """Labelled, unlabelled, validation and test rows as (n, 784) intensities in [0, 1] and (n,) labels;
    ``train_x``: every training row in the file's order, whatever the label draw (what M1 is fitted on)."""
    train, validation = load_mnist_train_valid(args)
    test = load_mnist(data_root(args, "mnist"), "test")
    labelled = balanced_labelled_subset(train.labels, args.labels, 10, seed=args.seed)
    unlabelled = torch.ones(len(train.labels), dtype=torch.bool)
    unlabelled[labelled] = False
    images = to_float(train.images, flatten=True)
    return {
        "train_x": images, "labelled_x": images[labelled], "labelled_y": train.labels[labelled],
        "unlabelled_x": images[unlabelled],
        "validation_x": to_float(validation.images, flatten=True), "validation_y": validation.labels,
        "test_x": to_float(test.images, flatten=True), "test_y": test.labels,
    }  # fmt: skip


def m1_optimizer(args: argparse.Namespace) -> PyroOptim:
    """Plain Adam (``--m1-lr``), or ``ClippedAdam`` with its elementwise clamp when ``--m1-clip-norm`` is given."""
    if args.m1_clip_norm is None:
        return Adam({"lr": args.m1_lr})
    return ClippedAdam({"lr": args.m1_lr, "clip_norm": args.m1_clip_norm})


def train_m1(data: dict, args: argparse.Namespace) -> tuple[DLGMGuide, float]:
    """M1: a DLGM 784-600-600-50 (softplus) fitted on every training image (``data["train_x"]``), labels
    unused, its initialisation, noise and shuffling drawn from ``--m1-seed`` alone.

    Returns the guide and the last epoch's training ELBO per image."""
    pyro.set_rng_seed(args.m1_seed)
    model = DLGM(784, (50,), ((600, 600),), activation="softplus", layer_scale="amortised", name="m1")
    guide = DLGMGuide.for_model(model, name="m1_guide")
    result = fit(model, guide, data["train_x"], epochs=args.m1_epochs, batch_size=100, optim=m1_optimizer(args),
                 transform_batch=lambda batch: (binarize_dynamic(batch),),
                 checkpoint_path=args.out / "m1_checkpoint.pt", resume=not args.fresh, seed=args.m1_seed,
                 progress=not args.no_progress)  # fmt: skip
    pyro.set_rng_seed(args.seed)
    return guide, result.history[-1]["train_elbo"]


@torch.no_grad()
def m1_posterior(guide: DLGMGuide, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of M1's q(z | x) given the intensities, each (data, 50), in chunks."""
    parts = [guide.layer_distribution(1, guide.features(chunk)[0], None).base_dist for chunk in images.split(2000)]
    return torch.cat([part.loc for part in parts]), torch.cat([part.scale for part in parts])


def use_m1_features(data: dict, guide: DLGMGuide, args: argparse.Namespace) -> dict:
    """Replace every image set in ``data`` by M1's posterior means (and, for training rows, standard
    deviations under ``<key>_scale``), keeping the latents whose means vary by more than ``--m1-min-std``
    over the training rows. Returns :func:`m1_summary` of the kept features."""
    keys = ("labelled_x", "unlabelled_x", "validation_x", "test_x")
    posterior = {key: m1_posterior(guide, data[key]) for key in keys}
    spread = torch.cat([posterior["labelled_x"][0], posterior["unlabelled_x"][0]]).std(0)
    keep = spread > args.m1_min_std
    if not bool(keep.any()):
        raise ValueError(f"--m1-min-std {args.m1_min_std} drops every M1 latent (largest spread {spread.max():.3g})")
    print(f"M1: {int(keep.sum())} of {len(keep)} latents kept (spread of their means > {args.m1_min_std})")
    del data["train_x"]  # the pixels M1 was fitted on; M2 sees only M1's features from here on
    for key, (mean, scale) in posterior.items():
        data[key] = mean[:, keep]
        if key in ("labelled_x", "unlabelled_x"):
            data[f"{key}_scale"] = scale[:, keep]
    return m1_summary(data)


def m1_summary(data: dict) -> dict:
    """How M1's features look to a classifier, in seconds, before any M2 training (a proxy to compare M1s on).

    Over the training rows: ``kl_per_latent``, the mean ``KL(q(z_j | x) || N(0, 1))`` of each kept latent
    (largest first), and ``active_latents``, those with more than 0.1 nats. ``nearest_neighbour_validation_error``:
    each validation row takes the label of the nearest labelled row's features (Euclidean), the only labels
    M2 sees."""
    mean = torch.cat([data["labelled_x"], data["unlabelled_x"]])
    scale = torch.cat([data["labelled_x_scale"], data["unlabelled_x_scale"]])
    kl = (0.5 * (mean**2 + scale**2 - 1) - scale.log()).mean(0).sort(descending=True).values
    nearest = torch.cdist(data["validation_x"], data["labelled_x"]).argmin(-1)
    error = float((data["labelled_y"][nearest] != data["validation_y"]).float().mean())
    print(f"M1: {int((kl > 0.1).sum())} latents above 0.1 nats, total KL {float(kl.sum()):.1f} nats; "
          f"nearest labelled neighbour's validation error {100 * error:.2f}%")  # fmt: skip
    return {"kl_per_latent": [round(float(v), 4) for v in kl], "active_latents": int((kl > 0.1).sum()),
            "nearest_neighbour_validation_error": error}  # fmt: skip


def training_input(x: torch.Tensor, scale: torch.Tensor | None, args: argparse.Namespace) -> torch.Tensor:
    """What a training step sees: binarised pixels for M2; M1 features (means, or draws with --m1-sample)."""
    if not args.m1:
        return binarize_dynamic(x) if args.pixels == "binarised" else x
    return x + scale * torch.randn_like(x) if args.m1_sample else x


def steps(data: dict, args: argparse.Namespace, generator: torch.Generator, epoch: int = 1) -> Iterator[tuple]:
    """One epoch of steps, each a tuple of parts ``(x, y, row_scale)`` with ``x`` as a training step sees it
    (:func:`training_input`): the unlabelled rows once, in batches, and a labelled batch drawn afresh every
    ``--labelled-every`` iterations (that iteration yields ``(labelled, unlabelled)``, the others ``(unlabelled,)``).

    Row weights: ``--weighting count`` makes each part an unbiased estimate of its sum over the training set
    (labelled rows N_l / B_l times ``--labelled-every``, unlabelled rows N_u / B_u); ``--weighting batch``
    weights every row 1, so each step's loss is its batch sum (Pyro's SS-VAE example). With
    ``--unlabelled-warmup E`` the unlabelled rows' weight grows linearly to full over the first E epochs.
    """
    n_u, n_l = len(data["unlabelled_x"]), len(data["labelled_x"])
    warmup = min(1.0, epoch / args.unlabelled_warmup) if args.unlabelled_warmup else 1.0
    unlabelled_order = torch.randperm(n_u, generator=generator)
    labelled_batch = min(args.labelled_batch, n_l)
    by_count = args.weighting == "count"
    labelled_scale = args.labelled_every * n_l / labelled_batch if by_count else 1.0
    unlabelled_scale = warmup * (n_u / args.batch_size if by_count else 1.0)
    no_labels = torch.full((args.batch_size,), -1, dtype=torch.long)
    for step, start in enumerate(range(0, n_u - args.batch_size + 1, args.batch_size)):
        u = unlabelled_order[start : start + args.batch_size]
        parts = []
        if step % args.labelled_every == 0:
            lab = torch.randperm(n_l, generator=generator)[:labelled_batch]
            x_l = training_input(data["labelled_x"][lab], rows(data, "labelled_x_scale", lab), args)
            parts.append((x_l, data["labelled_y"][lab], torch.full((labelled_batch,), labelled_scale)))
        x_u = training_input(data["unlabelled_x"][u], rows(data, "unlabelled_x_scale", u), args)
        yield (*parts, (x_u, no_labels, torch.full((len(u),), unlabelled_scale)))


def rows(data: dict, key: str, index: torch.Tensor) -> torch.Tensor | None:
    """``data[key][index]``, or None where ``data`` has no such entry."""
    return data[key][index] if key in data else None


def error_rate(guide: M2Guide, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((torch.cat([guide.predict(chunk) for chunk in x.split(5000)]) != y).float().mean())


def generative_error_rate(model: M2, guide: M2Guide, x: torch.Tensor, y: torch.Tensor) -> float:
    """Error of the generative model's own classifier ``argmax_k -L(x, k)`` (:func:`class_scores`) on the
    first 2,000 rows: where the unlabelled term pulls q(y | x)."""
    x, y = x[:2000], y[:2000]
    return float(
        (torch.cat([class_scores(model, guide, chunk).argmax(-1) for chunk in x.split(500)]) != y).float().mean()
    )


def test_metrics(guide: M2Guide, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Error, ECE (15 bins) and mean predictive entropy of q(y | x) on right and wrong predictions."""
    probs = torch.cat([guide.predict_proba(chunk) for chunk in x.split(5000)])
    entropy = categorical_entropy(probs)
    right = probs.argmax(-1) == y
    return {"error": float((~right).float().mean()), "ece": float(expected_calibration_error(probs, y)),
            "entropy_right": float(entropy[right].mean()),
            "entropy_wrong": float(entropy[~right].mean()) if bool((~right).any()) else None}  # fmt: skip


def supervised_baseline(guide: M2Guide, data: dict, args: argparse.Namespace) -> dict:
    """The same classifier trained on the labelled rows alone (cross-entropy, Adam, as many steps per
    epoch as M2 takes), its epoch chosen on validation error: what the unlabelled rows must beat."""
    classifier = guide.classifier
    optimizer = torch.optim.Adam(classifier.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed + 1)
    n_l = len(data["labelled_x"])
    best: dict = {"validation_error": float("inf")}
    for epoch in range(1, args.epochs + 1):
        classifier.train()
        for _ in range(len(data["unlabelled_x"]) // args.batch_size):
            picked = torch.randperm(n_l, generator=generator)[: min(args.labelled_batch, n_l)]
            x = training_input(data["labelled_x"][picked], rows(data, "labelled_x_scale", picked), args)
            loss = F.cross_entropy(classifier(x), data["labelled_y"][picked])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        error = error_rate(guide, data["validation_x"], data["validation_y"])
        if error < best["validation_error"]:
            best = {"epoch": epoch, "validation_error": error,
                    "test_error": error_rate(guide, data["test_x"], data["test_y"])}  # fmt: skip
    return best


def build(data: dict, args: argparse.Namespace, num_classes: int = 10) -> tuple[M2, M2Guide, ClippedAdam, SVI]:
    """Model, guide, optimizer and SVI whose model and guide take a per-row scale as third argument.

    ``num_classes``: the label values are ``0 .. num_classes - 1`` (10 digits; fewer for a subset of them)."""
    dim = data["labelled_x"].shape[1]
    if args.m1:  # Gaussian features: M1's posterior means
        model = M2(dim, num_classes, args.latent_dim, (args.hidden,), observation="gaussian",
                   observation_params={"scale": torch.ones(dim)}, init_scale=args.init_scale,
                   init_layers=args.init_layers, observation_scale=args.observation_scale)  # fmt: skip
    else:
        model = M2(dim, num_classes, args.latent_dim, (args.hidden,), init_scale=args.init_scale,
                   init_layers=args.init_layers)  # fmt: skip
    rows = len(data["labelled_x"]) + len(data["unlabelled_x"])
    guide = M2Guide.for_model(model, alpha=args.alpha * rows / len(data["labelled_x"]), init_scale=args.init_scale,
                              init_layers=args.init_layers, classifier_dropout=args.classifier_dropout)  # fmt: skip
    # ClippedAdam clamps each gradient *element* to +-clip_norm (no norm clip). With the count weighting the
    # unlabelled step's gradient is a sum over 50,000 rows and mostly clamped, so the default acts close to
    # sign-Adam and evens out the labelled and unlabelled steps (docs/m2.md); --clip-norm 1e9 is plain Adam.
    optim = ClippedAdam({"lr": args.lr, "betas": (0.9, 0.999), "clip_norm": args.clip_norm})
    grey = not args.m1 and args.pixels == "intensities"  # grey levels are no Bernoulli support: no validation

    def scaled_model(x: torch.Tensor, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        with pyro.validation_enabled(not grey):
            return poutine.scale(model, scale=s)(x, y)

    svi = SVI(scaled_model, lambda x, y, s: poutine.scale(guide, scale=s)(x, y), optim, enumerated_elbo())
    with poutine.block():  # register every parameter in Pyro's store before a checkpoint is loaded
        guide(data["labelled_x"][:2], data["labelled_y"][:2])
        model(data["labelled_x"][:2], data["labelled_y"][:2])
    return model, guide, optim, svi


def train(model, guide, svi, state: FitState, data: dict, args: argparse.Namespace) -> None:
    """Epochs from ``state.epoch + 1`` to ``--epochs``, each followed by the validation error and a checkpoint."""
    checkpointer = Checkpointer(args.out / CHECKPOINT_NAME)
    rows = len(data["labelled_x"]) + len(data["unlabelled_x"])
    for epoch in range(state.epoch + 1, args.epochs + 1):
        start, total = time.perf_counter(), 0.0
        guide.unlabelled_trains_classifier = epoch > args.classifier_warmup
        num_steps = len(data["unlabelled_x"]) // args.batch_size
        bar = tqdm(steps(data, args, state.shuffle, epoch), total=num_steps, desc=f"epoch {epoch}", leave=False,
                   disable=args.no_progress)  # fmt: skip
        for parts in bar:
            for x, y, scale in parts:  # two steps: the labelled rows need no enumeration (bench_m2_step.py)
                total += svi.step(x, y, scale)
        error = error_rate(guide, data["validation_x"], data["validation_y"])
        generative = generative_error_rate(model, guide, data["validation_x"], data["validation_y"])
        objective = -total / rows / (num_steps if args.weighting == "count" else 1)
        state.result.history.append({"epoch": epoch, "objective_per_row": objective,
                                     "validation_error": error, "generative_validation_error": generative,
                                     "seconds": time.perf_counter() - start})  # fmt: skip
        if state.best_params is None or error < min(h["validation_error"] for h in state.result.history[:-1]):
            state.result.best_epoch, state.best_params = epoch, state.param_values()
        state.epoch = epoch
        print(f"epoch {epoch}: validation error {100 * error:.2f}%, generative classifier {100 * generative:.1f}% "
              f"({time.perf_counter() - start:.0f} s)")  # fmt: skip
        checkpointer.save({"fit": state.state_dict()})


def m2_config(args: argparse.Namespace) -> dict:
    """What M2's checkpoint must have been written with to be resumed: with ``--m1`` also the settings that
    decide M1's features, so that another M1 does not resume it silently, and every :data:`M2_TRAINING_SETTINGS`
    entry this run sets off its default (``--epochs`` is not one: resuming to more epochs is the point)."""
    config = {"labels": args.labels, "seed": args.seed, "m1": args.m1, "hidden": args.hidden, "limit": args.limit}
    if args.m1:
        config.update({name: getattr(args, name) for name in M1_FEATURE_SETTINGS})
    defaults = parse_args(["--m1"] if args.m1 else [])
    config.update({name: getattr(args, name) for name in M2_TRAINING_SETTINGS
                   if getattr(args, name) != getattr(defaults, name)})  # fmt: skip
    return config


def check_m2_resumable(args: argparse.Namespace) -> None:
    """Stop before M1 is trained if ``<out>/checkpoint.pt`` holds an M2 that this run could not resume."""
    saved = None if args.fresh else Checkpointer(args.out / CHECKPOINT_NAME).load()
    if saved is not None:
        check_config(saved["fit"], m2_config(args), str(args.out / CHECKPOINT_NAME))


def fit_m2(data: dict, args: argparse.Namespace, num_classes: int = 10) -> tuple[M2, M2Guide, FitState]:
    """Build M2 (:func:`build`), resume from ``<out>/checkpoint.pt`` unless ``--fresh``, train to ``--epochs``
    (:func:`train`) and restore the epoch of lowest validation error. Returns the model, the guide and the
    fit state (its ``result.history`` and ``result.best_epoch``)."""
    model, guide, optim, svi = build(data, args, num_classes)
    names = [name for name, _ in pyro.get_param_store().named_parameters()]
    state = FitState(optim, names, m2_config(args), shuffle=torch.Generator().manual_seed(args.seed))
    saved = None if args.fresh else Checkpointer(args.out / CHECKPOINT_NAME).load()
    if saved is not None:
        state.load_state_dict(saved["fit"], str(args.out / CHECKPOINT_NAME))
        print(f"resumed from {args.out / CHECKPOINT_NAME} after epoch {state.epoch}")
    train(model, guide, svi, state, data, args)
    state.restore_best()
    return model, guide, state


def supervised_only(model: M2, data: dict, args: argparse.Namespace) -> dict:
    """:func:`supervised_baseline` of a fresh classifier built like ``model``'s guide (same layers, dropout,
    initialisation): the comparison ``--baseline`` reports."""
    same = {
        "classifier_dropout": args.classifier_dropout,
        "init_scale": args.init_scale,
        "init_layers": args.init_layers,
    }
    return supervised_baseline(M2Guide.for_model(model, **same), data, args)


def main(args: argparse.Namespace) -> dict:
    device = setup(args)
    args.out.mkdir(parents=True, exist_ok=True)
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    data = load_data(args)
    m1_record = None
    if args.m1:
        check_m2_resumable(args)
        m1, m1_elbo = train_m1(data, args)
        m1_record = {"train_elbo_per_image": m1_elbo, **use_m1_features(data, m1, args)}
    model, guide, state = fit_m2(data, args)
    best = state.result.history[state.result.best_epoch - 1]
    metrics = test_metrics(guide, data["test_x"], data["test_y"])
    results = {
        "labels": args.labels, "seed": args.seed, "m1": args.m1, "epochs": args.epochs,
        "best_epoch": best["epoch"], "validation_error": best["validation_error"],
        "test_error": metrics.pop("error"), "test_calibration": metrics,
        "m1_features": m1_record, "history": state.result.history, "settings": arguments_record(args),
        "environment": environment(device),
    }  # fmt: skip
    print(f"test error {100 * results['test_error']:.2f}% (epoch {best['epoch']}, chosen on validation)")
    if args.baseline:
        baseline = supervised_only(model, data, args)
        results["supervised_only"] = baseline
        print(f"supervised-only classifier, same labels: test error {100 * baseline['test_error']:.2f}%")
    if is_full_mnist_protocol(args) and args.labels in KINGMA_2014:
        m2, m1m2 = KINGMA_2014[args.labels]
        print(f"published reference (Kingma et al. 2014, {args.labels} labels): M2 {m2}%, M1+M2 {m1m2}%")
    if not args.m1:
        originals = data["test_x"][:10]
        analogy_grid(originals, analogies(model, guide, originals), args.out / "analogies.png")
        samples = class_conditional_samples(model, 8, generator=torch.Generator().manual_seed(0))
        class_samples_grid(samples, args.out / "class_samples.png")
    write_results(args.out / RESULTS_NAME, results)
    return results


if __name__ == "__main__":
    run_main(main, parse_args)
