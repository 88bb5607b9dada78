"""``pyro-bdl train | evaluate | sample MODEL``: the example scripts of each model family, as commands.

One code path: ``pyro-bdl train dlgm ARGS...`` parses ARGS with ``examples/dlgm_mnist.py``'s own
parser and runs its ``main``, exactly as ``python examples/dlgm_mnist.py ARGS...`` does (the same
flags, defaults, checks, checkpoint, resume and ``results.json``). So, like ``pyro-bdl bench``,
these commands need the source checkout (an editable install or ``PYTHONPATH``).

* ``train MODEL [--config FILE] [FLAGS...]``: flags or a JSON/TOML file of them (flags win;
  :mod:`pyro_bdl.config_file`); ``--sample-data`` trains on the MNIST sample shipped in the
  package. Writes ``checkpoint.pt`` (``bayes_checkpoint.pt`` for ``bayes_binary``) and
  ``results.json`` into ``--out``; rerunning resumes from the checkpoint (``--fresh`` starts over).
* ``evaluate MODEL RUN [FLAGS...]``: the finished run in folder RUN (its checkpoint, read with
  ``weights_only=True``, and the settings in its ``results.json``) rerun with nothing left to
  train, so only the scoring runs; the metrics are printed and written to ``RUN/evaluation``
  (``--out``). Evaluation flags (``--test-limit``, ``--iw-samples``, ...) may be changed; training
  ones cannot (``--epochs`` and ``--fresh`` are refused).
* ``sample MODEL RUN [--num N] [--out FILE.png]``: digits drawn from a trained generative model
  (``dlgm``: ``E[x | z]``, ``z ~ p(z)``; ``m2``: one column per class; ``rbm``: Gibbs chains), as a
  PNG and the pixel means as ``.npy`` beside it. The classifiers (``bnn``, ``binarynet``,
  ``bayes_binary``) generate no digits: ``sample`` says so in one line (exit code 2) and points to
  ``evaluate``, whose predictive scores are what they produce.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pickle
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine

from pyro_bdl.checkpoint import load_checkpoint
from pyro_bdl.cli.base import PROG, CommandError
from pyro_bdl.cli.bench import source_checkout
from pyro_bdl.config_file import program_name
from pyro_bdl.experiment import UsageError
from triton_kernels.files import atomic_write

FIXED_IN_EVALUATION = ("--epochs", "--fresh", "--config")
"""Flags ``evaluate`` refuses: they would train more or change what was trained."""
DROPPED_SETTINGS = ("out", "fresh", "config")


@dataclass(frozen=True)
class Model:
    """A model family: its example script, what it is, how to draw samples (None for a classifier), and the
    flags ``evaluate`` sets itself (for the parts of a run that keep a checkpoint)."""

    script: str
    what: str
    sampler: Callable[[ModuleType, argparse.Namespace, dict, int, torch.Generator], torch.Tensor] | None = None
    evaluation_flags: tuple[str, ...] = ()


def _fit_params(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The params a :func:`pyro_bdl.inference.fit` checkpoint ends with (the best epoch's when it kept one)."""
    return checkpoint.get("best_params") or checkpoint["params"]


def _load_params(names_from: Callable[[], Any], values: dict[str, torch.Tensor]) -> None:
    """Run ``names_from`` once (which creates the params in Pyro's store), then copy ``values`` into them."""
    pyro.clear_param_store()
    with poutine.block(), torch.no_grad():
        names_from()
    store = dict(pyro.get_param_store().named_parameters())
    missing = sorted(set(store) - set(values))
    if missing:
        raise CommandError(f"the checkpoint lacks params {missing}: it is not from this model's settings")
    with torch.no_grad():
        for name, target in store.items():
            target.copy_(values[name])


def _sample_dlgm(module: ModuleType, args: argparse.Namespace, saved: dict, num: int, generator) -> torch.Tensor:
    model, guide = module.build_model(args)
    _load_params(
        lambda: (guide(torch.zeros(2, 784)), model(torch.zeros(2, 784))),
        _fit_params(saved.get("fit", saved)),
    )
    with torch.no_grad(), pyro.poutine.seed(rng_seed=int(torch.randint(2**31, (), generator=generator))):
        return poutine.trace(model).get_trace(None, num_data=num).nodes["obs"]["fn"].mean


def _sample_m2(module: ModuleType, args: argparse.Namespace, saved: dict, num: int, generator) -> torch.Tensor:
    from pyro_bdl.models import M2
    from pyro_bdl.models.m2 import class_conditional_samples

    if args.m1:
        raise CommandError("an M1+M2 run (--m1) models DLGM features, not pixels: it has no digits to sample")
    model = M2(784, 10, args.latent_dim, (args.hidden,), init_scale=args.init_scale)
    values = _fit_params(saved["fit"])
    _load_params(lambda: model(torch.zeros(2, 784), torch.zeros(2, dtype=torch.long)), values)
    with torch.no_grad():
        return class_conditional_samples(model, max(num // 10, 1), generator=generator)  # (n, 10, 784)


def _sample_rbm(module: ModuleType, args: argparse.Namespace, saved: dict, num: int, generator) -> torch.Tensor:
    """``E[v | h]`` after the last of the Gibbs sweeps, from the trained parameters (not an ``--ema`` average)."""
    from pyro_bdl.models import RBM

    rbm = RBM(784, args.hidden)
    rbm.load_state_dict(saved["rbm"])
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(2**31, (), generator=generator)))
        v = rbm.sample(num, 1000 if args.hidden >= 100 else 10)
        return rbm.visible_mean(torch.bernoulli(rbm.hidden_probs(v)))


MODELS: dict[str, Model] = {
    "dlgm": Model("dlgm_mnist.py", "deep latent Gaussian model (VAE), IW log-likelihood", _sample_dlgm),
    "m2": Model("ssvae_mnist.py", "semi-supervised M2 (Kingma et al. 2014)", _sample_m2),
    "bnn": Model("bnn_mnist.py", "Bayesian neural network classifier (Gaussian weights, SVI)"),
    "rbm": Model("rbm_mnist.py", "restricted Boltzmann machine, CD/PCD, AIS log-likelihood", _sample_rbm),
    "binarynet": Model("binarynet_mnist.py", "BinaryNet MLP (Courbariaux et al. 2016), packed XNOR inference"),
    "bayes_binary": Model(
        "bayes_binary_mnist.py",
        "Bayesian binary network (Bernoulli weights) and its baseline",
        evaluation_flags=("--methods", "bayes"),  # the BinaryNet baseline keeps no checkpoint: it would retrain
    ),
}
"""``pyro-bdl train|evaluate|sample`` MODEL -> its example script in ``examples/``."""


def models_epilog() -> str:
    width = max(map(len, MODELS))
    lines = [f"  {name:<{width}}  examples/{model.script}: {model.what}" for name, model in MODELS.items()]
    return "models:\n" + "\n".join(lines)


def load_example(name: str) -> ModuleType:
    """The example script of model ``name``, imported from the source checkout."""
    root = source_checkout()
    if root is None:
        raise CommandError(
            "the model commands run the example scripts of the source checkout; clone the repository, "
            "`pip install -e .` there and run pyro-bdl from it"
        )
    path = root / "examples" / MODELS[name].script
    spec = importlib.util.spec_from_file_location(f"pyro_bdl_example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_example(module: ModuleType, prog: str, words: list[str], lenient: bool = False) -> argparse.Namespace:
    with program_name(prog, ignore_unknown_keys=lenient):
        return module.parse_args(words)


def run_settings(model: str, module: ModuleType, run: Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint of a finished run in folder ``run`` and the settings its ``results.json`` recorded."""
    checkpoint = run / module.CHECKPOINT_NAME
    if not run.is_dir():
        raise CommandError(f"RUN {run}: no such folder (train first: {PROG} train {model} --out {run})")
    if not checkpoint.is_file():
        raise CommandError(
            f"RUN {run}: no checkpoint {checkpoint.name} there (train first: {PROG} train {model} --out {run})"
        )
    results = run / module.RESULTS_NAME
    if not results.is_file():
        raise CommandError(
            f"RUN {run}: no {results.name}, so training has not finished; resume it with {PROG} train {model} "
            f"--out {run} and the same flags"
        )
    record = json.loads(results.read_text(encoding="utf-8"))
    settings = record.get("config") or record.get("settings")
    if not isinstance(settings, dict):
        raise CommandError(
            f"{results}: holds no 'config' or 'settings' table; it was not written by the {model} script"
        )
    settings = {key: value for key, value in settings.items() if key not in DROPPED_SETTINGS}
    return checkpoint, settings


def read_checkpoint(path: Path) -> dict[str, Any]:
    """:func:`~pyro_bdl.checkpoint.load_checkpoint` (``weights_only=True``); an unreadable file is one line."""
    try:
        return load_checkpoint(path)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CommandError(f"{path}: not a readable weights-only checkpoint ({first})") from None


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, array)


def _settings_file(settings: dict[str, Any]) -> Path:
    """A temporary JSON file of a run's settings, for ``--config`` (the caller removes it)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as handle:
        json.dump(settings, handle)
    return Path(handle.name)


class _Train:
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.epilog = models_epilog() + f"\n\n{PROG} train MODEL --help shows the model's flags and their defaults."
        parser.add_argument("model", choices=list(MODELS), metavar="MODEL", help="the model family (below)")
        parser.add_argument(
            "arguments", nargs=argparse.REMAINDER, metavar="FLAGS", help="the model's flags, --config FILE"
        )

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        module = load_example(args.model)
        parsed = _run_example(module, f"{PROG} train {args.model}", list(args.arguments))
        try:
            module.main(parsed)
        except UsageError as error:
            raise CommandError(str(error)) from None
        except FileNotFoundError as error:
            hint = (
                f"; --sample-data trains on the digits inside the package, {PROG} data fetch mnist --to DIR gets MNIST"
            )
            raise CommandError(f"{error}{hint}") from None
        return 0


class _Evaluate:
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.epilog = models_epilog() + (
            f"\n\n{PROG} evaluate MODEL RUN --help shows the model's flags; {', '.join(FIXED_IN_EVALUATION)} are "
            "fixed by the run."
        )
        parser.add_argument("model", choices=list(MODELS), metavar="MODEL", help="the model family (below)")
        parser.add_argument("run", type=Path, metavar="RUN", help="folder of a finished pyro-bdl train run (its --out)")
        parser.add_argument(
            "arguments", nargs=argparse.REMAINDER, metavar="FLAGS",
            help="evaluation flags of the model (e.g. --test-limit); --out defaults to RUN/evaluation",
        )  # fmt: skip

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        words = list(args.arguments)
        fixed = (*FIXED_IN_EVALUATION, *MODELS[args.model].evaluation_flags[::2])
        refused = [word for word in words if word.split("=")[0] in fixed]
        if refused:
            raise CommandError(f"{refused[0]} is fixed by the run being evaluated; train again to change it")
        module = load_example(args.model)
        prog = f"{PROG} evaluate {args.model} {args.run}"
        if {"-h", "--help"} & set(words):
            _run_example(module, prog, words)
        checkpoint, settings = run_settings(args.model, module, args.run)
        read_checkpoint(checkpoint)  # weights_only=True: refuse a file that is not plain tensors and containers
        out = args.run / "evaluation"
        config = _settings_file(settings)
        try:
            flags = ["--config", str(config), "--out", str(out), *MODELS[args.model].evaluation_flags, *words]
            parsed = _run_example(module, prog, flags, lenient=True)
        finally:
            config.unlink()
        parsed.out.mkdir(parents=True, exist_ok=True)
        if parsed.out.resolve() != args.run.resolve():
            copy = parsed.out / checkpoint.name
            atomic_write(copy, lambda temporary: shutil.copyfile(checkpoint, temporary))
        try:
            module.main(parsed)
        except UsageError as error:
            raise CommandError(str(error)) from None
        return 0


class _Sample:
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        generative = [name for name, model in MODELS.items() if model.sampler]
        parser.epilog = models_epilog() + f"\n\ngenerative (they can sample): {', '.join(generative)}"
        parser.add_argument("model", choices=list(MODELS), metavar="MODEL", help="the model family (below)")
        parser.add_argument("run", type=Path, metavar="RUN", help="folder of a finished pyro-bdl train run (its --out)")
        parser.add_argument(
            "--num", type=int, default=100, help="digits to draw (m2: rounded down to whole rows of 10)"
        )
        parser.add_argument("--seed", type=int, default=0, help="seeds the draws")
        parser.add_argument(
            "--out", type=Path, default=None, help="PNG to write (default: RUN/samples_cli.png); .npy beside it"
        )

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from pyro_bdl.figures.dlgm import sample_grid
        from pyro_bdl.figures.m2 import class_samples_grid

        entry = MODELS[args.model]
        if entry.sampler is None:
            raise CommandError(
                f"{args.model} is a classifier p(y | x) and generates no digits; its predictive samples are scored by "
                f"{PROG} evaluate {args.model} RUN"
            )
        if args.num < 1:
            raise CommandError(f"--num must be a positive integer, got {args.num}")
        out = args.out if args.out is not None else args.run / "samples_cli.png"
        if out.suffix != ".png":
            raise CommandError(f"--out must name a .png file, got {str(out)!r}")
        module = load_example(args.model)
        checkpoint, settings = run_settings(args.model, module, args.run)
        config = _settings_file(settings)
        try:
            parsed = _run_example(module, f"{PROG} sample {args.model}", ["--config", str(config)], lenient=True)
        finally:
            config.unlink()
        saved = read_checkpoint(checkpoint)
        images = entry.sampler(module, parsed, saved, args.num, torch.Generator().manual_seed(args.seed))
        if images.dim() == 3:  # m2: (rows, classes, 784), one column per class
            class_samples_grid(images, out)
        else:
            sample_grid(images, out, title=f"{args.model}: {len(images)} samples")
        array = out.with_suffix(".npy")
        atomic_write(array, lambda temporary: _save_array(temporary, images.numpy()))
        print(f"samples: {out.resolve()} (pixel means: {array.resolve()}, shape {tuple(images.shape)})")
        return 0


train, evaluate, sample = _Train(), _Evaluate(), _Sample()
