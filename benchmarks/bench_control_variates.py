"""Gradient variance of score-function estimators with control variates, and of a relaxed estimator, on an SBN.

One sigmoid belief network (binarised MNIST, ``--latent-dims``, default 200) and one minibatch
of real training images (binarised once, seeded). Five estimators of the ELBO gradient:

* ``reinforce``: Pyro's ``TraceGraph_ELBO``, no baseline (score function with Pyro's
  Rao-Blackwellised downstream costs);
* ``average``: ``use_decaying_avg_baseline`` (``baseline_beta`` 0.8);
* ``neural``: NVIL's input-dependent baseline (``nn_baseline`` with ``nn_baseline_input``) on
  top of the decaying average;
* ``neural+normalised``: the same under :class:`pyro_bdl.inference.NormalisedTraceGraph_ELBO`
  (NVIL's variance normalisation); its inference-network gradients are multiplied back by the
  divisor of their step before the variance is taken, so the variance is in the units of the
  others (normalisation rescales the step, it does not remove noise);
* ``concrete-st``: Pyro's ``RelaxedBernoulliStraightThrough`` in model and guide (``--temperature``)
  under ``Trace_ELBO``: reparameterised, biased for the discrete ELBO.

Protocol: the SBN is first trained for ``--pretrain-steps`` NVIL steps (so the variances are those
of a model in training, not of the initialisation); then, per estimator, from that same point,
its baselines (if any) are trained for ``--baseline-steps`` steps with the model and guide fixed,
and ``--draws`` gradient estimates are taken on the fixed minibatch. Its rows are shuffled
before each draw (the estimate, a mean over the rows, does not change): Pyro's decaying average
keeps one average per position in the batch, which on a fixed, unshuffled batch would become a
per-image baseline that no training run has. The neural baselines start from the pretrained ones. Reported per parameter
tensor: the variance across draws, averaged over the tensor's entries. Then each estimator
trains the pretrained SBN for ``--train-steps`` Adam steps on the same sequence of minibatches,
and the discrete ELBO of ``--eval-images`` held-out images (last training images, binarised
once) is reported at intervals. Table on stdout, JSON to ``runs/bench/`` (``--record``:
``benchmarks/results/``), plot beside the JSON.

    python benchmarks/bench_control_variates.py --threads 1
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import pyro
import torch
from matplotlib.figure import Figure
from pyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO
from timing import add_output_arguments, output_path

from pyro_bdl.data import load_mnist, to_float
from pyro_bdl.experiment import (
    add_common_arguments,
    data_root,
    environment,
    make_parser,
    require_positive,
    run_main,
    setup,
    write_results,
)
from pyro_bdl.inference import NormalisedTraceGraph_ELBO, elbo_per_datum
from pyro_bdl.models.sbn import SBNGuide, SigmoidBeliefNetwork

ESTIMATORS = ("reinforce", "average", "neural", "neural+normalised", "concrete-st")
BASELINE = {"reinforce": "none", "average": "average", "neural": "neural", "neural+normalised": "neural"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(parser, out=None)
    add_output_arguments(parser)
    parser.add_argument("--latent-dims", type=lambda s: [int(v) for v in s.split(",")], default=[200])
    parser.add_argument("--batch-size", type=int, default=100, help="images in the fixed minibatch and per step")
    parser.add_argument("--pretrain-steps", type=int, default=500)
    parser.add_argument("--baseline-steps", type=int, default=300)
    parser.add_argument("--draws", type=int, default=200, help="gradient estimates per estimator")
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--eval-images", type=int, default=1000)
    parser.add_argument("--temperature", type=float, default=0.5, help="Concrete temperature of concrete-st")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--limit", type=int, default=20000, help="training images used")
    args = parser.parse_args(argv)
    require_positive(parser, args, "batch_size", "draws", "train_steps", "eval_every", "eval_images", "limit")
    for name in ("pretrain_steps", "baseline_steps"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be non-negative, got {getattr(args, name)}")
    if args.temperature <= 0 or any(d < 1 for d in args.latent_dims):
        parser.error("--temperature and --latent-dims must be positive")
    if args.eval_images + args.batch_size > args.limit:
        parser.error(f"--limit ({args.limit}) must exceed --eval-images + --batch-size")
    return args


def build(args, estimator: str, state: dict | None) -> tuple:
    """Model, guide and loss of ``estimator``; model and guide weights from ``state`` when given."""
    relaxed = estimator == "concrete-st"
    model = SigmoidBeliefNetwork(784, args.latent_dims, temperature=args.temperature if relaxed else None)
    guide = SBNGuide.for_model(model, baseline=BASELINE.get(estimator, "none"))
    if state is not None:
        model.load_state_dict(state["model"])
        guide.encoders.load_state_dict(state["encoders"])
        if guide.baseline == "neural":
            guide.baselines.load_state_dict(state["baselines"])
    if relaxed:
        loss = Trace_ELBO()
    elif estimator == "neural+normalised":
        loss = NormalisedTraceGraph_ELBO(normaliser_beta=0.8)
    else:
        loss = TraceGraph_ELBO()
    return model, guide, loss


def trained(model, guide) -> dict[str, torch.nn.Parameter]:
    return {
        **{f"model.{n}": p for n, p in model.named_parameters()},
        **{f"guide.{n}": p for n, p in guide.named_parameters() if n.startswith("encoders")},
    }


def gradient_draws(args, estimator: str, state: dict, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-parameter variance across ``--draws`` ELBO-gradient estimates on ``batch``."""
    pyro.clear_param_store()
    model, guide, loss = build(args, estimator, state)
    params = trained(model, guide)
    baseline_params = [p for n, p in guide.named_parameters() if not n.startswith("encoders")]
    optimiser = torch.optim.Adam(baseline_params, lr=args.lr) if baseline_params else None
    shuffle = torch.Generator().manual_seed(args.seed + 4)
    sums = {name: torch.zeros_like(p) for name, p in params.items()}
    squares = {name: torch.zeros_like(p) for name, p in params.items()}
    for step in range(args.baseline_steps + args.draws):
        for p in [*params.values(), *baseline_params]:
            p.grad = None
        rows = batch[torch.randperm(len(batch), generator=shuffle)]  # see the module docstring
        if estimator == "concrete-st":
            loss.differentiable_loss(model, guide, rows).backward()
        else:
            loss.loss_and_grads(model, guide, rows)
        if step < args.baseline_steps:
            if optimiser is not None:
                optimiser.step()
            continue
        for name, p in params.items():
            grad = -p.grad / len(batch)  # per-image ELBO gradient
            if estimator == "neural+normalised" and name.startswith("guide.encoders."):
                layer = int(name.split(".")[2]) + 1
                grad = grad * loss.normaliser.last_divisors[f"z_{layer}"]
            sums[name] += grad
            squares[name] += grad.square()
    out = {}
    for name in params:
        mean = sums[name] / args.draws
        out[name] = ((squares[name] / args.draws - mean.square()) * args.draws / (args.draws - 1)).mean()
    return out


def train_curve(args, estimator: str, state: dict, train: torch.Tensor, held_out: torch.Tensor) -> list[dict]:
    """Discrete held-out ELBO every ``--eval-every`` of ``--train-steps`` Adam steps."""
    pyro.clear_param_store()
    model, guide, loss = build(args, estimator, state)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": args.lr}), loss)
    order = torch.Generator().manual_seed(args.seed + 3)
    curve, started = [], time.perf_counter()
    for step in range(1, args.train_steps + 1):
        index = torch.randint(len(train), (args.batch_size,), generator=order)
        svi.step(torch.bernoulli(train[index], generator=order))
        if step % args.eval_every == 0 or step == args.train_steps:
            curve.append(
                {
                    "step": step,
                    "held_out_elbo": evaluate(args, model, guide, held_out),
                    "seconds": time.perf_counter() - started,
                }
            )
    return curve


def evaluate(args, model, guide, held_out: torch.Tensor) -> float:
    """The discrete ELBO per image (5 samples), with the weights of ``model``/``guide`` in a binary SBN."""
    binary = SigmoidBeliefNetwork(784, args.latent_dims)
    binary_guide = SBNGuide.for_model(binary, baseline="none")
    binary.load_state_dict(model.state_dict())
    binary_guide.encoders.load_state_dict(guide.encoders.state_dict())
    with pyro.poutine.block():
        return elbo_per_datum(binary, binary_guide, held_out, num_samples=5, particle_chunk=5).mean().item()


def pretrain(args, train: torch.Tensor) -> dict:
    pyro.clear_param_store()
    model, guide, loss = build(args, "neural+normalised", None)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": args.lr}), loss)
    order = torch.Generator().manual_seed(args.seed + 2)
    for _ in range(args.pretrain_steps):
        index = torch.randint(len(train), (args.batch_size,), generator=order)
        svi.step(torch.bernoulli(train[index], generator=order))
    return {name: copy.deepcopy(module.state_dict()) for name, module in
            (("model", model), ("encoders", guide.encoders), ("baselines", guide.baselines))}  # fmt: skip


def plot(results: dict, path: Path) -> None:
    figure = Figure(figsize=(10, 4))
    left, right = figure.subplots(1, 2)
    names = list(results["estimators"])
    guide_var = [results["estimators"][n]["guide_variance"] for n in names]
    model_var = [results["estimators"][n]["model_variance"] for n in names]
    positions = range(len(names))
    left.bar([p - 0.2 for p in positions], guide_var, width=0.4, label="inference network")
    left.bar([p + 0.2 for p in positions], model_var, width=0.4, label="model")
    left.set_yscale("log")
    left.set_xticks(list(positions), names, rotation=20)
    left.set_ylabel("mean per-parameter gradient variance")
    left.legend()
    for name in names:
        curve = results["estimators"][name]["curve"]
        right.plot([c["step"] for c in curve], [c["held_out_elbo"] for c in curve], marker="o", label=name)
    right.set_xlabel("Adam steps after pretraining")
    right.set_ylabel("held-out ELBO (nats / image)")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110, format="png")


def main(args: argparse.Namespace) -> dict:
    setup(args)
    images = load_mnist(data_root(args, "mnist"), "train", limit=args.limit).images
    intensities = to_float(images, flatten=True)
    fixed = torch.Generator().manual_seed(args.seed + 1)
    held_out = torch.bernoulli(intensities[-args.eval_images :], generator=fixed)
    train = intensities[: -args.eval_images]
    batch = torch.bernoulli(train[: args.batch_size], generator=fixed)
    started = time.perf_counter()
    state = pretrain(args, train)
    results = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "estimators": {}}
    for estimator in ESTIMATORS:
        variances = gradient_draws(args, estimator, state, batch)
        guide_var = torch.stack([v for n, v in variances.items() if n.startswith("guide.")]).mean().item()
        model_var = torch.stack([v for n, v in variances.items() if n.startswith("model.")]).mean().item()
        curve = train_curve(args, estimator, state, train, held_out)
        results["estimators"][estimator] = {
            "per_parameter_variance": {n: v.item() for n, v in variances.items()},
            "guide_variance": guide_var,
            "model_variance": model_var,
            "curve": curve,
        }
        print(f"{estimator:>18}: guide var {guide_var:.3e}  model var {model_var:.3e}  "
              f"held-out ELBO after {args.train_steps} steps {curve[-1]['held_out_elbo']:.2f}", flush=True)  # fmt: skip
    results["seconds"] = time.perf_counter() - started
    results["environment"] = environment()
    names = sorted({n for e in results["estimators"].values() for n in e["per_parameter_variance"]})
    print(f"\nmean per-parameter variance of the per-image ELBO gradient ({args.draws} draws, batch {args.batch_size})")
    print(f"{'parameter':>28} " + " ".join(f"{e:>17}" for e in ESTIMATORS))
    for name in names:
        cells = [results["estimators"][e]["per_parameter_variance"][name] for e in ESTIMATORS]
        print(f"{name:>28} " + " ".join(f"{c:17.3e}" for c in cells))
    path = write_results(output_path(args, "control_variates"), results)
    plot(results, path.with_suffix(".png"))
    print(f"plot written to {path.with_suffix('.png')}; {results['seconds']:.0f} s in all")
    return results


if __name__ == "__main__":
    run_main(main, parse_args)
