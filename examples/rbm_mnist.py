"""A binary RBM on MNIST trained by CD-k or persistent CD through Pyro's SVI; AIS test log-likelihood.

Protocol (Salakhutdinov & Murray 2008): the 60,000 training and 10,000 test images are binarised
once, stochastically, each pixel drawn as Bernoulli(intensity) with the fixed seed
``--binarize-seed`` (training set) and ``--binarize-seed + 1`` (test set). Thresholding at 0.5
instead makes the data far easier (about 18 nats for the same model): such numbers are not
comparable. Anchors at 500 hidden units (their Table 2): CD-1 -125.53, CD-3 -105.50,
CD-25 -86.34 nats.

Training: plain ``pyro.infer.SVI`` with :class:`~pyro_bdl.inference.ContrastiveDivergence`
(CD-k, or PCD with ``--persistent`` and ``--chains`` persistent chains), the model scaled by
1 / batch so the gradient is the batch mean; SGD with momentum ``--momentum-start`` for the
first 5 epochs then ``--momentum``, weight decay ``--weight-decay`` and a learning rate decaying
linearly from ``--lr`` (first epoch) towards ``--lr-final`` (reached after the last); with
``--anneal-from E`` the rate stays at ``--lr`` for epochs 1 to E and follows the same line after
(``lr + (lr_final - lr) (epoch - 1) / epochs``), and ``--anneal-k K`` runs those last epochs with
K Gibbs sweeps per step (the chosen recipe, docs/rbm.md round 5). With
``--fast-lr`` (and ``--persistent``) the chains sample with fast parameters added (FPCD, Tieleman
& Hinton 2009). With ``--ema DECAY ...`` exponential moving averages of the parameters (Polyak
averaging, per step) are kept beside them and scored too. Pyro's validation is off inside the
training loop (the rows are checked once before it). ``--validation N`` holds out the last N
training images and scores them in place of the test set: settings are chosen that way, never on
test.

Scoring: ``log Z`` by AIS from the base-rate model of the training data (``--ais-betas``
inverse temperatures on Salakhutdinov & Murray's schedule, ``--ais-runs`` runs), reported with
its standard error and the effective sample size of the weights; then AIS again with another
seed and 4x the temperatures (``--ais-check``, on by default): a low ESS makes AIS flatter the
model, and the two estimates must agree (for the headline model: with ``--validation`` and
``--score-test`` the model, trained or averaged, with the best validation log-likelihood under
the same log Z; otherwise the first average if ``--ema`` is given, else the trained parameters).
Train and held-out log-likelihood are ``mean(-F(v)) - log Z``.

A checkpoint is written to ``<out>/checkpoint.pt`` after every epoch (exact resume, PCD chains
included); results (per-epoch monitors, AIS, settings, machine) to ``<out>/results.json``,
filters and samples to ``<out>/*.png``.

    python examples/rbm_mnist.py --persistent --epochs 640 --anneal-from 600 --anneal-k 5 --ema 0.999 --out runs/rbm
    python examples/rbm_mnist.py --persistent --k 1 --epochs 200 --out runs/rbm_mnist_pcd1
    python examples/rbm_mnist.py --k 1 --epochs 50 --out runs/rbm_mnist_cd1
    python examples/rbm_mnist.py --limit 2000 --epochs 2 --hidden 50 --ais-betas 1000   # smoke
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI
from tqdm.auto import tqdm

from pyro_bdl.data import binarize_dynamic, load_mnist, to_float
from pyro_bdl.experiment import (
    Checkpointer,
    add_common_arguments,
    arguments_record,
    data_root,
    environment,
    make_parser,
    require_positive,
    run_main,
    setup,
    write_results,
)
from pyro_bdl.figures.rbm import filter_grid, gibbs_samples_grid
from pyro_bdl.inference import ContrastiveDivergence, ais_log_partition, base_rate_bias
from pyro_bdl.inference.contrastive_divergence import INIT_CHAINS
from pyro_bdl.models import RBM, RBMGuide

CHECKPOINT_NAME = "checkpoint.pt"
RESULTS_NAME = "results.json"
MOMENTUM_SWITCH_EPOCH = 5
SALAKHUTDINOV_MURRAY_2008 = {"CD-1": -125.53, "CD-3": -105.50, "CD-25": -86.34}
"""Their AIS test log-likelihoods (nats) of 500-hidden RBMs on stochastically binarised MNIST."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(parser, out="runs/rbm_mnist")
    parser.add_argument("--hidden", type=int, default=500, help="hidden units")
    parser.add_argument("--k", type=int, default=1, help="Gibbs sweeps per step (CD-k / PCD-k)")
    parser.add_argument("--persistent", action="store_true", help="persistent chains (PCD)")
    parser.add_argument("--chains", type=int, default=100, help="persistent chains (with --persistent)")
    parser.add_argument("--init-chains", choices=INIT_CHAINS, default="model",
                        help="where persistent chains start: draws of p(v | h = 0), or the first batch")  # fmt: skip
    parser.add_argument("--fast-lr", type=float, default=0.0,
                        help="FPCD (with --persistent): learning rate of the fast parameters the chains sample "
                             "with (Tieleman & Hinton 2009); 0: plain PCD")  # fmt: skip
    parser.add_argument("--fast-decay", type=float, default=0.95, help="FPCD: the fast parameters' decay per step")
    parser.add_argument("--epochs", type=int, default=200, help="passes over the training images")
    parser.add_argument("--batch-size", type=int, default=100, help="rows per step")
    parser.add_argument("--lr", type=float, default=0.01, help="initial learning rate (batch-mean gradient)")
    parser.add_argument("--lr-final", type=float, default=0.0, help="learning rate reached after the last epoch")
    parser.add_argument("--anneal-from", type=int, default=0,
                        help="hold the learning rate at --lr for epochs 1..ANNEAL_FROM, then decay it linearly "
                             "(the same line as without it); 0: decay from the first epoch")  # fmt: skip
    parser.add_argument("--anneal-k", type=int, default=None,
                        help="Gibbs sweeps per step in the epochs after --anneal-from (all epochs when it is 0; "
                             "default: --k)")  # fmt: skip
    parser.add_argument("--momentum-start", type=float, default=0.5, help="momentum of the first 5 epochs")
    parser.add_argument("--momentum", type=float, default=0.5, help="momentum afterwards (0.9: unstable, docs/rbm.md)")
    parser.add_argument("--weight-decay", type=float, default=2e-4, help="L2 weight decay (SGD's)")
    parser.add_argument("--binarize-seed", type=int, default=0, help="seed of the one stochastic binarisation")
    parser.add_argument("--limit", type=int, default=None, help="use only the first LIMIT training images")
    parser.add_argument("--test-limit", type=int, default=None, help="score only the first TEST_LIMIT test images")
    parser.add_argument("--validation", type=int, default=0,
                        help="hold out the last VALIDATION training images and score them instead of the test "
                             "set (settings are chosen so, never on test); 0: the full protocol")  # fmt: skip
    parser.add_argument("--score-test", action="store_true",
                        help="with --validation: train on the same rows but score the test set (once the settings "
                             "were chosen on the held-out rows)")  # fmt: skip
    parser.add_argument("--ema", type=float, nargs="+", default=[], metavar="DECAY",
                        help="also keep exponential moving averages of the parameters with these per-step "
                             "decays (Polyak averaging), each scored beside the trained parameters")  # fmt: skip
    parser.add_argument("--ais-betas", type=int, default=14500, help="AIS inverse temperatures")
    parser.add_argument("--ais-runs", type=int, default=100, help="AIS runs")
    parser.add_argument("--no-ais-check", dest="ais_check", action="store_false",
                        help="skip the AIS rerun with another seed and 4x the temperatures")  # fmt: skip
    parser.add_argument("--no-figures", dest="figures", action="store_false", help="write no PNG")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    args = parser.parse_args(argv)
    require_positive(parser, args, "hidden", "k", "chains", "epochs", "batch_size", "ais_runs", "threads")
    require_positive(parser, args, "limit", "test_limit")
    if not 0 <= args.validation < (args.limit or 60_000):
        parser.error(f"--validation must lie in [0, training images), got {args.validation}")
    if args.score_test and not args.validation:
        parser.error("--score-test needs --validation (without it the test set is scored anyway)")
    if any(not 0 < decay < 1 for decay in args.ema):
        parser.error(f"--ema decays must lie in (0, 1), got {args.ema}")
    if not 0 <= args.fast_lr < float("inf") or not 0 <= args.fast_decay < 1:
        parser.error(f"--fast-lr must be >= 0 and --fast-decay in [0, 1), got {args.fast_lr} and {args.fast_decay}")
    if args.fast_lr and not args.persistent:
        parser.error(f"--fast-lr needs --persistent (FPCD's fast parameters move persistent chains), got {args.fast_lr}"
                     " without it")  # fmt: skip
    if not 0 <= args.anneal_from < args.epochs:
        parser.error(f"--anneal-from must lie in [0, --epochs), got {args.anneal_from} with --epochs {args.epochs}")
    require_positive(parser, args, "anneal_k")
    if args.ais_betas < 10:
        parser.error(f"--ais-betas must be >= 10, got {args.ais_betas}")
    if not args.lr > 0 or not 0 <= args.lr_final <= args.lr:
        parser.error(f"--lr must be > 0 and --lr-final in [0, lr], got {args.lr} and {args.lr_final}")
    for name in ("momentum_start", "momentum"):
        if not 0 <= getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must lie in [0, 1), got {getattr(args, name)}")
    return args


def load_data(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Training and held-out images (n, 784), each set binarised once with its documented seed, and the
    validation images when the test set is scored too (else None).

    With ``--validation N`` the training rows are the first images but the last N (binarised with the
    whole training set, so they are the same bits as in a full run), held out unless ``--score-test``,
    and the test set is not loaded unless ``--score-test`` (then the N rows come third: each model's
    validation log-likelihood under the same log Z picks the model the AIS check reruns)."""
    root = data_root(args, "mnist")
    train = to_float(load_mnist(root, "train", limit=args.limit).images, flatten=True)
    train = binarize_dynamic(train, torch.Generator().manual_seed(args.binarize_seed))
    if args.validation:
        train, heldout = train[: -args.validation], train[-args.validation :]
        if not args.score_test:
            return train, heldout, None
    test = to_float(load_mnist(root, "test", limit=args.test_limit).images, flatten=True)
    test = binarize_dynamic(test, torch.Generator().manual_seed(args.binarize_seed + 1))
    return train, test, heldout if args.validation else None


def ema_name(decay: float) -> str:
    """The results key of the average with ``decay``."""
    return f"ema_{decay:g}"


@torch.no_grad()
def update_averages(rbm: RBM, averages: dict[str, dict[str, torch.Tensor]], decays: Sequence[float]) -> None:
    """``avg <- decay avg + (1 - decay) theta`` for every parameter and decay (started at the initial values)."""
    for decay in decays:
        average = averages.setdefault(ema_name(decay), {n: p.detach().clone() for n, p in rbm.named_parameters()})
        for name, param in rbm.named_parameters():
            average[name].lerp_(param.detach(), 1 - decay)


def averaged_rbm(rbm: RBM, average: dict[str, torch.Tensor]) -> RBM:
    """A copy of ``rbm`` holding the averaged parameters."""
    copy = RBM(rbm.data_dim, rbm.hidden_dim, visible=rbm.visible)
    copy.load_state_dict(average)
    return copy


def epoch_settings(epoch: int, args: argparse.Namespace) -> dict[str, float]:
    """SGD settings of 1-based ``epoch``: the learning rate held until ``--anneal-from``, then on the line from
    ``--lr`` (epoch 1) to ``--lr-final`` (after the last epoch); the momentum switch."""
    held = epoch <= args.anneal_from
    lr = args.lr if held else args.lr + (args.lr_final - args.lr) * (epoch - 1) / args.epochs
    momentum = args.momentum_start if epoch <= MOMENTUM_SWITCH_EPOCH else args.momentum
    return {"lr": lr, "momentum": momentum, "weight_decay": args.weight_decay}


def gibbs_sweeps(epoch: int, args: argparse.Namespace) -> int:
    """CD-k's k in 1-based ``epoch``: ``--anneal-k`` (when given) after ``--anneal-from``, else ``--k``."""
    return args.anneal_k if args.anneal_k is not None and epoch > args.anneal_from else args.k


def optimizer(settings: dict[str, float], state: dict) -> pyro.optim.SGD:
    """A Pyro SGD with ``settings``, continuing the momentum buffers of ``state`` (``get_state()``)."""
    for param_state in state.values():
        for group in param_state["param_groups"]:
            group.update(settings)
    optim = pyro.optim.SGD(settings)
    optim.set_state(state)
    return optim


def heldout_name(args: argparse.Namespace) -> str:
    """``"validation"`` with ``--validation``, else ``"test"``: the prefix of the held-out scores."""
    return "validation" if args.validation and not args.score_test else "test"


def monitors(rbm: RBM, train: torch.Tensor, heldout: torch.Tensor, name: str) -> dict[str, float]:
    """Cheap per-epoch monitors on up to 1,000 rows: pseudo-log-likelihood and reconstruction error."""
    return {
        "train_pseudo_ll": float(rbm.pseudo_log_likelihood(train[:1000]).mean()),
        f"{name}_pseudo_ll": float(rbm.pseudo_log_likelihood(heldout[:1000]).mean()),
        f"{name}_reconstruction_error": float(rbm.reconstruction_error(heldout[:1000]).mean()),
    }


def train(rbm: RBM, loss: ContrastiveDivergence, data: torch.Tensor, test: torch.Tensor, args) -> dict:
    """Epochs from the checkpoint's (or 1) to ``--epochs``; returns the saved state."""
    checkpointer = Checkpointer(args.out / CHECKPOINT_NAME)
    saved = None if args.fresh else checkpointer.load()
    shuffle = torch.Generator().manual_seed(args.seed)
    state = {"epoch": 0, "history": [], "optim": {}, "seconds": 0.0, "shuffle": shuffle.get_state(), "averages": {}}
    if saved is not None:
        rbm.load_state_dict(saved["rbm"])
        loss.load_state_dict(saved["loss"])
        state = {key: saved.get(key, state[key]) for key in state}
        kept = {ema_name(decay) for decay in args.ema}  # --ema names the averages kept and scored
        state["averages"] = {name: average for name, average in state["averages"].items() if name in kept}
        print(f"resumed from {checkpointer.path} after epoch {state['epoch']}")
    shuffle.set_state(state["shuffle"])
    model = poutine.scale(rbm, scale=1.0 / args.batch_size)
    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        settings = epoch_settings(epoch, args)
        loss.k = gibbs_sweeps(epoch, args)
        optim = optimizer(settings, state["optim"])
        svi = SVI(model, RBMGuide(), optim, loss)
        start, total = time.perf_counter(), 0.0
        batches = data[torch.randperm(data.shape[0], generator=shuffle)].split(args.batch_size)
        with pyro.validation_enabled(False):  # the rows were checked once in main; no per-step checks
            for batch in tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not args.progress):
                total += svi.step(batch)
                update_averages(rbm, state["averages"], args.ema)
        seconds = time.perf_counter() - start
        record = {"epoch": epoch, **settings, "cd_loss": total / len(batches), "seconds": seconds,
                  **monitors(rbm, data, test, heldout_name(args))}  # fmt: skip
        state = {"epoch": epoch, "history": [*state["history"], record], "optim": optim.get_state(),
                 "seconds": state["seconds"] + seconds, "shuffle": shuffle.get_state(),
                 "averages": state["averages"]}  # fmt: skip
        checkpointer.save({**state, "rbm": rbm.state_dict(), "loss": loss.state_dict()})
        name = heldout_name(args)
        print(f"epoch {epoch}: {seconds:.1f} s, {name} pseudo-LL {record[f'{name}_pseudo_ll']:.2f}, "
              f"reconstruction {record[f'{name}_reconstruction_error']:.2f}")  # fmt: skip
    return state


def score(rbm: RBM, train: torch.Tensor, test: torch.Tensor, args: argparse.Namespace, check: bool,
          label: str = "trained", validation: torch.Tensor | None = None) -> dict:  # fmt: skip
    """AIS log Z (``check``: only its rerun with another seed and 4x the temperatures), then train and
    held-out (and ``validation``) log-likelihoods under each estimate."""
    base = base_rate_bias(train)
    runs = [("ais_check", 4 * args.ais_betas, args.seed + 1)] if check else [("ais", args.ais_betas, args.seed)]
    heldout = heldout_name(args)
    out = {}
    for name, betas, seed in runs:
        start = time.perf_counter()
        result = ais_log_partition(rbm, num_betas=betas, num_runs=args.ais_runs, base_bias=base,
                                   generator=torch.Generator().manual_seed(seed))  # fmt: skip
        out[name] = {**result.as_dict(), "seed": seed, "seconds": time.perf_counter() - start,
                     "train_ll": _mean_ll(rbm, train, result.log_z),
                     f"{heldout}_ll": _mean_ll(rbm, test, result.log_z)}  # fmt: skip
        if validation is not None:
            out[name]["validation_ll"] = _mean_ll(rbm, validation, result.log_z)
        print(f"{label} {name}: {betas} temperatures x {args.ais_runs} runs: log Z = {result.log_z:.3f} "
              f"+- {result.stderr:.3f}, ESS {result.ess:.1f}; {heldout} LL {out[name][f'{heldout}_ll']:.2f}, "
              f"train LL {out[name]['train_ll']:.2f} nats")  # fmt: skip
    return out


def _mean_ll(rbm: RBM, rows: torch.Tensor, log_z: float) -> float:
    return float(torch.cat([rbm.log_likelihood(chunk, log_z) for chunk in rows.split(10_000)]).double().mean())


def main(args: argparse.Namespace) -> dict:
    setup(args)
    args.out.mkdir(parents=True, exist_ok=True)
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    train_data, test_data, validation = load_data(args)
    rbm = RBM(784, args.hidden)
    rbm.check_visible(train_data)  # once: training runs with Pyro's validation off
    with torch.no_grad():
        rbm.visible_bias.copy_(base_rate_bias(train_data).float())
    loss = ContrastiveDivergence(args.k, persistent=args.persistent,
                                 num_chains=args.chains if args.persistent else None, fast_lr=args.fast_lr,
                                 fast_decay=args.fast_decay, init_chains=args.init_chains)  # fmt: skip
    state = train(rbm, loss, train_data, test_data, args)
    models = {"trained": rbm, **{name: averaged_rbm(rbm, average) for name, average in state["averages"].items()}}
    scores = {name: score(model, train_data, test_data, args, False, name, validation)
              for name, model in models.items()}  # fmt: skip
    # the AIS rerun checks the headline model: the best on validation rows when the test set is scored with
    # --validation, else the first average if any, else the trained parameters
    if validation is not None:
        checked = max(scores, key=lambda name: scores[name]["ais"]["validation_ll"])
    else:
        checked = next(iter(scores)) if len(scores) == 1 else list(scores)[1]
    if args.ais_check:
        scores[checked].update(score(models[checked], train_data, test_data, args, True, checked, validation))
    if args.figures:
        filter_grid(rbm, args.out / "filters.png")
        gibbs_samples_grid(rbm, args.out / "samples.png", steps_between=1000 if args.hidden >= 100 else 10)
    method = f"{'FPCD' if args.fast_lr else 'PCD' if args.persistent else 'CD'}-{args.k}"
    if args.anneal_k is not None:
        method += f", k = {args.anneal_k} after epoch {args.anneal_from}"
    payload = {"method": method, "epochs": state["epoch"], "train_seconds": state["seconds"],
               "heldout": heldout_name(args), "history": state["history"], "scores": scores.pop("trained"),
               "scores_averaged": scores, "headline": checked, "chosen_on_validation": validation is not None,
               "anchors_salakhutdinov_murray_2008": SALAKHUTDINOV_MURRAY_2008,
               "settings": arguments_record(args), "environment": environment("cpu")}  # fmt: skip
    write_results(args.out / RESULTS_NAME, payload)
    return payload


if __name__ == "__main__":
    run_main(main, parse_args)
