"""Bayesian binary network vs BinaryNet on MNIST: same architecture, same epoch budget (issue 13).

Both networks have +-1 weights and sign activations, batch norm after every layer and real
pixels (scaled to [-1, 1]) into the first layer: an MLP ``784 - hidden x depth - 10`` or, with
``--arch conv``, the small ConvNet of :class:`~pyro_bdl.models.bayes_binary.BayesBinaryConvNet`.

* BinaryNet (Courbariaux et al. 2016): latent real weights, straight-through estimator, Adam
  with BinaryNet's per-layer learning rates, weights clipped to [-1, 1], learning rate decayed
  exponentially from ``--lr-start`` to ``--lr-end``. Trained with the cross-entropy (the paper's
  square hinge loss gives scores, not probabilities, and the comparison is on probabilities);
  ``--baseline-loss hinge`` for the paper's loss. Its uncertainty is the max softmax.
* Bayesian (BayesBiNN's model, Meng et al. 2020): ``W ~ SignBernoulli(prior_probs)``,
  ``y ~ Categorical(f_W(x))``, mean-field Bernoulli guide, ``TraceMeanField_ELBO`` (analytic
  KL) through :func:`pyro_bdl.inference.fit`, BayesBiNN's natural-gradient step on the logits
  with its estimator (``--estimator mean``: the hard sample's gradient through ``tanh(l / 2)``)
  and the same exponential decay; Adam on the batch norms. Predictions average
  ``--num-samples`` sampled networks on the packed XNOR kernels (MLP: one batched ensemble;
  ConvNet: S packed networks in turn), each with its batch norms re-estimated on
  ``--calibration`` training images; the posterior mode ``sign(logits)`` is exported to the
  packed single network as well.

Both use the last epoch (no early stopping); BinaryNet's batch norms are re-estimated on the
same ``--calibration`` images. Settings are chosen on the validation images (the last 10,000
training images) and the test set is scored once. The defaults are the settings that scored
best on validation (docs/bayes_binary.md): the natural gradient with ``alpha = 5e-3``, the mean
estimator, a likelihood weight of 2000 (a tempered posterior; 1 is the ELBO) with the logits
clipped to +-60 (the 1000 / +-30 of 2-epoch runs, scaled together), two weight samples per step
(``--particles``), Adam at 3e-2 on the batch norms, and 32 posterior networks whose batch norms
are re-estimated on all 50,000 training images (MLP); BinaryNet's batch norms take 3e-2 too
(``--baseline-bn-lr``, chosen on validation against the paper's 3e-3 and against 1e-1).
Reported for each: test error, test log-likelihood, ECE (15 bins), predictive entropy on right
and wrong predictions, and the AUROC of telling test digits from two out-of-distribution sets made from them
(:mod:`pyro_bdl.data.shift`: rotated by 90 degrees, pixels permuted with a fixed seed), by
predictive entropy and (Bayesian) mutual information, and by ``1 - max softmax`` for BinaryNet.

    python examples/bayes_binary_mnist.py --epochs 10                            # MLP 784-512-512-10
    python examples/bayes_binary_mnist.py --arch conv --epochs 3
    python examples/bayes_binary_mnist.py --hidden 64 --epochs 1 --limit 3000 --test-limit 500   # quick
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence

import pyro
import torch
import torch.nn.functional as F
from pyro.infer import TraceMeanField_ELBO

from pyro_bdl.bnn import BNNClassifier
from pyro_bdl.conventions import DATA_PLATE
from pyro_bdl.data import load_mnist, permute_pixels, rotate_images, to_float
from pyro_bdl.evaluation import (
    auroc,
    bald_decomposition,
    classification_error,
    classification_scores,
    mean_probabilities,
)
from pyro_bdl.experiment import (
    add_common_arguments,
    add_mnist_split_arguments,
    arguments_record,
    check_mnist_split_arguments,
    data_root,
    environment,
    load_mnist_train_valid,
    make_parser,
    print_history,
    require_positive,
    run_main,
    setup,
    write_results,
)
from pyro_bdl.inference.fit import fit
from pyro_bdl.inference.minibatch import scale_data_plate
from pyro_bdl.inference.mixture_elbo import MixtureLikelihood_ELBO
from pyro_bdl.inference.natural_gradient import natural_gradient_optim
from pyro_bdl.layers import attach_weight_clipping, binary_layers, binarynet_param_groups
from pyro_bdl.layers.bayes_binary import bayesian_binary_layers
from pyro_bdl.models.bayes_binary import BayesBinaryConvNet, BayesBinaryMLP, BernoulliMeanFieldGuide
from pyro_bdl.networks import (
    BinaryNetMLP,
    export_packed_convnet,
    export_packed_ensemble_convnet,
    export_packed_mlp,
    square_hinge_loss,
)
from pyro_bdl.networks.packed_ensemble import (
    export_packed_ensemble,
    posterior_mode_convnet,
    posterior_mode_mlp,
    recalibrate_batch_norm,
)

RESULTS_NAME = "results.json"
CHECKPOINT_NAME = "bayes_checkpoint.pt"
ARCHS = ("mlp", "conv")
METHODS = ("both", "bayes", "binarynet")
OOD_SEED = 0
CALIBRATION = {"mlp": 50000, "conv": 5000}  # default --calibration: all 50,000 training images for the MLP


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(parser, out="runs/bayes_binary_mnist")
    parser.add_argument("--arch", choices=ARCHS, default="mlp")
    parser.add_argument("--methods", choices=METHODS, default="both", help="which networks to train")
    parser.add_argument("--hidden", type=int, default=512, help="units per hidden layer (conv: of the dense layer)")
    parser.add_argument("--depth", type=int, default=2, help="hidden layers of the MLP")
    parser.add_argument("--width", type=int, default=32, help="channels of the first conv block")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr-start", type=float, default=3e-3, help="BinaryNet's Adam learning rate at the start")
    parser.add_argument("--lr-end", type=float, default=3e-5, help="both methods' learning rate at the end")
    parser.add_argument("--baseline-loss", choices=("ce", "hinge"), default="ce")
    parser.add_argument("--dropout-in", type=float, default=0.0, help="BinaryNet MLP input dropout")
    parser.add_argument("--dropout-hidden", type=float, default=0.0, help="BinaryNet MLP hidden dropout")
    parser.add_argument(
        "--optimizer",
        choices=("natural", "adam"),
        default="natural",
        help="the logits' update: BayesBiNN's natural gradient, or Adam on the logits",
    )
    parser.add_argument("--natural-lr", type=float, default=5e-3, help="natural-gradient step alpha at the start")
    parser.add_argument("--bn-lr", type=float, default=3e-2, help="Bayesian net: Adam rate of the batch norms")
    parser.add_argument("--baseline-bn-lr", type=float, default=3e-2, help="BinaryNet: batch norms' Adam rate")
    parser.add_argument("--max-logit", type=float, default=60.0, help="natural gradient: clip the logits to +-this")
    parser.add_argument("--bayes-lr", type=float, default=3e-2, help="Adam learning rate of the logits at the start")
    parser.add_argument(
        "--estimator",
        choices=("relaxed", "mean"),
        default="mean",
        help="the guide's gradient estimator: Gumbel-softmax straight-through, or BayesBiNN's (through the mean)",
    )
    parser.add_argument("--temperature", type=float, default=0.1, help="of the relaxed sample")
    parser.add_argument("--particles", type=int, default=2, help="weight samples per step (ELBO particles)")
    parser.add_argument(
        "--objective",
        choices=("elbo", "mixture"),
        default="elbo",
        help="elbo: each particle's log-likelihood averaged (TraceMeanField_ELBO); mixture: each image's "
        "likelihood averaged over the particles before the log (MixtureLikelihood_ELBO, the PAC^m bound)",
    )
    parser.add_argument("--init-logit-scale", type=float, default=3.0, help="initial logits uniform in [-s, s]")
    parser.add_argument("--prior-probs", type=float, default=0.5, help="prior P(w = +1)")
    parser.add_argument(
        "--likelihood-weight",
        type=float,
        default=2000.0,
        help="log-likelihood factor in the ELBO (1: the ELBO; > 1: a tempered, 'cold' posterior)",
    )
    parser.add_argument(
        "--calibration",
        type=int,
        default=None,
        help="training images on which the batch norms of BinaryNet, of each sampled network and of the mode "
        f"are re-estimated after training (0: none, running statistics; default: {CALIBRATION['mlp']} for the MLP, "
        f"{CALIBRATION['conv']} for the ConvNet)",
    )
    parser.add_argument("--num-samples", type=int, default=32, help="posterior networks averaged in prediction")
    add_mnist_split_arguments(parser)
    parser.add_argument(
        "--no-test",
        action="store_true",
        help="score the validation images only (for choosing settings; the test set untouched)",
    )
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    require_positive(
        parser, args, "hidden", "depth", "width", "epochs", "batch_size", "num_samples", "threads", "particles"
    )
    if args.calibration is None:
        args.calibration = CALIBRATION[args.arch]
    if args.calibration < 0:
        parser.error(f"--calibration must be non-negative, got {args.calibration}")
    positive = ("lr_start", "lr_end", "natural_lr", "bayes_lr", "temperature", "init_logit_scale", "likelihood_weight")
    require_positive(parser, args, *positive)
    require_positive(parser, args, "bn_lr", "baseline_bn_lr", "max_logit")
    if not args.lr_end <= min(args.lr_start, args.bayes_lr):
        parser.error("--lr-end must not exceed --lr-start or --bayes-lr")
    if not args.natural_lr < 1:
        parser.error(f"--natural-lr must lie in (0, 1), got {args.natural_lr}")
    if not 0 < args.prior_probs < 1 or not (0 <= args.dropout_in < 1 and 0 <= args.dropout_hidden < 1):
        parser.error("need 0 < --prior-probs < 1 and dropout rates in [0, 1)")
    check_mnist_split_arguments(parser, args)
    if args.validation == 0:
        parser.error("--validation must be positive: settings are chosen on it")
    return args


def shape_images(images: torch.Tensor, arch: str) -> torch.Tensor:
    """(n, 28, 28) uint8 -> float in [-1, 1], (n, 784) for the MLP or (n, 1, 28, 28) for the ConvNet."""
    x = to_float(images, -1.0, 1.0)
    return x.flatten(1) if arch == "mlp" else x.unsqueeze(1)


def load_data(args: argparse.Namespace) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train / valid / test, and the two OOD sets made from test, as (inputs, labels)."""
    train, valid = load_mnist_train_valid(args)
    test = load_mnist(data_root(args, "mnist"), "test", limit=args.test_limit)
    parts = {"train": train, "valid": valid, "test": test}
    data = {name: (shape_images(part.images, args.arch), part.labels) for name, part in parts.items()}
    data["rotated"] = (shape_images(rotate_images(test.images, 1), args.arch), test.labels)
    data["permuted"] = (shape_images(permute_pixels(test.images, OOD_SEED), args.arch), test.labels)
    return data


def decay(args: argparse.Namespace, start: float, steps: int) -> float:
    """The per-step factor taking the learning rate from ``start`` to ``--lr-end`` in ``steps`` steps."""
    return (args.lr_end / start) ** (1.0 / max(steps, 1))


# ---------------------------------------------------------------- BinaryNet (deterministic, STE)


def binarynet(args: argparse.Namespace) -> torch.nn.Module:
    """The deterministic network: BinaryNet's MLP, or the Bayesian ConvNet's blocks with latent real weights."""
    if args.arch == "mlp":
        return BinaryNetMLP(784, args.hidden, args.depth, 10, args.dropout_in, args.dropout_hidden)
    net = BayesBinaryConvNet(1, args.width, args.hidden, 10)
    model = posterior_mode_convnet(net, [torch.ones(layer.weight_shape) for _, layer in bayesian_binary_layers(net)])
    for layer in binary_layers(model):
        layer.reset_parameters()  # latent weights uniform in [-1, 1], as BinaryNet starts
    return model.train()


def train_binarynet(args: argparse.Namespace, data: dict) -> tuple[torch.nn.Module, list[dict]]:
    model = binarynet(args)
    groups = binarynet_param_groups(model, args.lr_start)
    if len(groups) > len(list(binary_layers(model))):  # the last group: batch norms (and biases)
        groups[-1]["lr"] = args.baseline_bn_lr
    optimizer = torch.optim.Adam(groups)
    attach_weight_clipping(optimizer, model)
    images, labels = data["train"]
    steps_per_epoch = math.ceil(len(labels) / args.batch_size)
    gamma = decay(args, args.lr_start, args.epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    generator = torch.Generator().manual_seed(args.seed)
    history = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        started, total = time.perf_counter(), 0.0
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), args.batch_size):
            index = order[start : start + args.batch_size]
            scores = model(images[index])
            loss = F.cross_entropy(scores, labels[index]) if args.baseline_loss == "ce" else square_hinge_loss(
                scores, labels[index])  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(index)
        model.eval()
        valid_error = classification_error(binarynet_logits(model, data["valid"][0]).softmax(-1)[0], data["valid"][1])
        seconds = time.perf_counter() - started
        history.append({"epoch": epoch, "loss": total / len(labels), "valid_error": valid_error, "seconds": seconds})
        print(f"binarynet epoch {epoch:3d}  loss {total / len(labels):.4f}  valid error {100 * valid_error:.2f}%  "
              f"({seconds:.0f} s)", flush=True)  # fmt: skip
    return model.eval(), history


@torch.no_grad()
def binarynet_logits(model: torch.nn.Module, x: torch.Tensor, chunk: int = 2000) -> torch.Tensor:
    """(1, n, 10) scores of the deterministic network."""
    return torch.cat([model(x[start : start + chunk]) for start in range(0, len(x), chunk)]).unsqueeze(0)


# ---------------------------------------------------------------- Bayesian binary network


def bayes_model(args: argparse.Namespace) -> tuple[BNNClassifier, BernoulliMeanFieldGuide]:
    if args.arch == "mlp":
        net = BayesBinaryMLP(784, args.hidden, args.depth, 10, prior_probs=args.prior_probs)
    else:
        net = BayesBinaryConvNet(1, args.width, args.hidden, 10, prior_probs=args.prior_probs)
    model = BNNClassifier(net, num_classes=10)
    guide = BernoulliMeanFieldGuide(model, temperature=args.temperature, estimator=args.estimator,
                                    init_logit_scale=args.init_logit_scale)  # fmt: skip
    return model, guide


def train_bayes(args: argparse.Namespace, data: dict, model, guide) -> list[dict]:
    steps = args.epochs * math.ceil(len(data["train"][1]) / args.batch_size)
    if args.optimizer == "natural":  # the batch norms take Adam at --bn-lr
        optim = natural_gradient_optim(args.natural_lr, args.bn_lr, lr_decay=decay(args, args.lr_start, steps),
                                       max_logit=args.max_logit)  # fmt: skip
    else:
        lrd = decay(args, args.bayes_lr, steps)
        optim = pyro.optim.ClippedAdam({"lr": args.bayes_lr, "lrd": lrd, "clip_norm": 1e6})
    if args.likelihood_weight != 1.0:
        model = scale_data_plate(model, DATA_PLATE, args.likelihood_weight)
    if args.objective == "mixture":
        loss = MixtureLikelihood_ELBO(num_particles=args.particles)
    else:
        loss = TraceMeanField_ELBO(num_particles=args.particles)
    result = fit(model, guide, data["train"], optim=optim, loss=loss, epochs=args.epochs, batch_size=args.batch_size,
                 checkpoint_path=args.out / CHECKPOINT_NAME, resume=not args.fresh,
                 seed=args.seed, progress=not args.no_progress)  # fmt: skip
    print_history(result.history, label="bayes epoch")
    return result.history


class BayesPredictor:
    """S posterior networks drawn once from the guide and packed into one batched ensemble.

    MLP: :func:`export_packed_ensemble`; ConvNet: :func:`export_packed_ensemble_convnet`; each
    sampled network with its own re-estimated batch norms when ``calibration`` is given, else
    with the running statistics. One pass over the kernels evaluates all S networks.
    """

    def __init__(self, args: argparse.Namespace, model: BNNClassifier, guide: BernoulliMeanFieldGuide,
                 calibration: torch.Tensor | None) -> None:  # fmt: skip
        self.model, self.guide, self.arch = model.eval(), guide, args.arch
        net = model.net
        layers = [layer for _, layer in bayesian_binary_layers(net)]
        self.draws = guide.sample_weights(args.num_samples)
        weights = guide.by_layer(self.draws, layers)
        mode = guide.by_layer(guide.mode(), layers)
        if args.arch == "mlp":
            self.ensemble = export_packed_ensemble(net, weights, calibration=calibration)
            mode_net = posterior_mode_mlp(net, mode)
            export = export_packed_mlp
        else:
            self.ensemble = export_packed_ensemble_convnet(net, weights, calibration=calibration)
            mode_net = posterior_mode_convnet(net, mode)
            export = export_packed_convnet
        if calibration is not None:
            recalibrate_batch_norm(mode_net, calibration)
        self.mode = export(mode_net)

    @torch.no_grad()
    def logits(self, x: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
        """(S, n, 10) logits of the S drawn networks."""
        return torch.cat([self.ensemble(x[start : start + chunk]) for start in range(0, len(x), chunk)], dim=1)

    @staticmethod
    def batched(network, x: torch.Tensor, chunk: int) -> torch.Tensor:
        """(n, 10) logits of one network, ``chunk`` inputs at a time."""
        return torch.cat([network(x[start : start + chunk]) for start in range(0, len(x), chunk)])

    @torch.no_grad()
    def mode_logits(self, x: torch.Tensor, chunk: int = 2000) -> torch.Tensor:
        return self.batched(self.mode, x, chunk).unsqueeze(0)


# ---------------------------------------------------------------- metrics


def metrics(logits: torch.Tensor, labels: torch.Tensor, ood_logits: dict[str, torch.Tensor]) -> dict:
    """Error, log-likelihood, ECE, entropy split by right/wrong, and OOD AUROCs; logits (S, n, 10)."""
    prob_samples = logits.softmax(-1)
    probs = mean_probabilities(prob_samples)
    entropy, _, information = bald_decomposition(prob_samples)
    result = {**classification_scores(logits, labels), "ood_auroc": {}}
    # Calibration diagnostics: mean confidence minus accuracy (< 0: underconfident), and the S networks' own mean LL.
    result["confidence_minus_accuracy"] = float(probs.max(-1).values.mean()) - (1 - result["error"])
    result["member_log_likelihood"] = float(-F.cross_entropy(logits.flatten(0, 1), labels.repeat(len(logits))))
    for name, other in ood_logits.items():
        other_samples = other.softmax(-1)
        other_entropy, _, other_information = bald_decomposition(other_samples)
        other_probs = other_samples.mean(0)
        scores = {"entropy": (entropy, other_entropy),
                  "one_minus_max_softmax": (1 - probs.max(-1).values, 1 - other_probs.max(-1).values)}  # fmt: skip
        if logits.shape[0] > 1:
            scores["mutual_information"] = (information, other_information)
        result["ood_auroc"][name] = {score: auroc(inside, outside) for score, (inside, outside) in scores.items()}
    return result


def evaluate(logits_fn, data: dict, test: bool = True) -> dict:
    """Scores on the validation images, and (``test``) on the test images and the two OOD sets."""
    scores = {"valid": metrics(logits_fn(data["valid"][0]), data["valid"][1], {})}
    if test:
        ood = {name: logits_fn(data[name][0]) for name in ("rotated", "permuted")}
        scores["test"] = metrics(logits_fn(data["test"][0]), data["test"][1], ood)
    return scores


def summary(name: str, scores: dict) -> str:
    if "test" not in scores:
        valid = scores["valid"]
        return (f"{name:24s} valid err {100 * valid['error']:.2f}%  valid LL {valid['log_likelihood']:.4f}  "
                f"ECE {100 * valid['ece']:.2f}%  conf - acc {100 * valid['confidence_minus_accuracy']:+.2f}  "
                f"member LL {valid['member_log_likelihood']:.4f}")  # fmt: skip
    test = scores["test"]
    ood = ", ".join(f"{k} {max(v.values()):.3f}" for k, v in test["ood_auroc"].items())
    return (f"{name:24s} valid err {100 * scores['valid']['error']:.2f}%  test err {100 * test['error']:.2f}%  "
            f"test LL {test['log_likelihood']:.4f}  ECE {100 * test['ece']:.2f}%  "
            f"H right/wrong {test['entropy_correct']:.3f}/{test['entropy_wrong'] or float('nan'):.3f}  "
            f"OOD AUROC (best score) {ood}")  # fmt: skip


def main(args: argparse.Namespace) -> dict:
    setup(args)
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    data = load_data(args)
    results: dict = {"environment": environment(), "config": arguments_record(args)}
    if args.methods in ("both", "binarynet"):
        started = time.perf_counter()
        model, history = train_binarynet(args, data)
        if args.calibration:  # as for the Bayesian networks: running statistics flip sign activations
            recalibrate_batch_norm(model, data["train"][0][: args.calibration])
        results["binarynet"] = {"history": history, "train_seconds": time.perf_counter() - started,
                                **evaluate(lambda x: binarynet_logits(model, x), data, not args.no_test)}  # fmt: skip
        print(summary("binarynet (max softmax)", results["binarynet"]))
    if args.methods in ("both", "bayes"):
        pyro.set_rng_seed(args.seed)
        model, guide = bayes_model(args)
        started = time.perf_counter()
        history = train_bayes(args, data, model, guide)
        train_seconds = time.perf_counter() - started
        calibration = data["train"][0][: args.calibration] if args.calibration else None
        predictor = BayesPredictor(args, model, guide, calibration)
        started = time.perf_counter()
        scores = evaluate(predictor.logits, data, not args.no_test)
        results["bayes"] = {"history": history, "train_seconds": train_seconds,
                            "predict_seconds": time.perf_counter() - started, **scores}  # fmt: skip
        results["bayes_mode"] = evaluate(predictor.mode_logits, data, not args.no_test)
        print(summary(f"bayes ({args.num_samples} samples)", results["bayes"]))
        print(summary("bayes posterior mode", results["bayes_mode"]))
    write_results(args.out / RESULTS_NAME, results)
    return results


if __name__ == "__main__":
    run_main(main, parse_args)
