"""Every command the docs or a script's ``--help`` show parses, and runs at tiny size.

Commands are collected from the docstrings of ``examples/*.py`` and ``benchmarks/*.py`` (their
``--help`` text) and from ``README.md`` and ``docs/*.md``: each line that starts with
``python examples/`` or ``python benchmarks/`` (a trailing ``\\`` continues it; a ``#`` comment
ends it), and each such command in inline backticks. Each one must pass its script's own
argument parsing and validation as written. Then each runs in-process with extra flags
appended that shrink it (fewer epochs, smaller nets, a tiny output folder); flags the command
sets itself that matter for validity are kept: a command that sets ``--validation`` keeps its
``--limit``; otherwise ``--limit 1200`` is added, which still fails where the ``--validation``
default does not adapt to ``--limit`` (the old default of 10,000 did not).

``pyro-bdl`` commands are collected from lines of ``README.md`` and ``docs/*.md`` that start with
``pyro-bdl `` (placeholders such as ``NAME...`` belong in tables and inline text, which are not
collected). Each must parse as written, and runs with :data:`CLI_TINY`'s flags appended; a
``data fetch`` downloads from a server on 127.0.0.1 serving the real files, into a temporary folder.
"""

from __future__ import annotations

import re
import shlex

import pytest
import torch

from pyro_bdl.cli import build_parser
from pyro_bdl.cli import main as pyro_bdl_main
from tests.examples.helpers import REPO, load_script, run_script
from tests.pyro_bdl.http_mirror import mirror_site, serve

COMMAND = re.compile(r"^python3? ((?:examples|benchmarks)/\w+\.py\b.*)$")
INLINE = re.compile(r"`python3? ((?:examples|benchmarks)/\w+\.py\b[^`]*)`")
CLI_COMMAND = re.compile(r"^pyro-bdl (.*)$")

# appended to every command of a script when it runs (argparse: the last value wins)
TINY = {
    script: flags.split()
    for script, flags in {
        "examples/binarynet_mnist.py": "--hidden 32 --depth 1 --epochs 1 --no-progress",
        "examples/bnn_mnist.py": "--hidden 16 --epochs 1 --test-limit 200 --num-samples 2 --no-progress",
        "examples/bnn_uci.py": "--datasets yacht --max-splits 1 --min-steps 30 --num-samples 5 --selection-splits 1 "
        "--no-progress",
        "examples/dlgm_mnist.py": "--epochs 1 --test-limit 20 --iw-samples 10 --elbo-samples 2 --impute-images 5 "
        "--impute-steps 2 --no-figures --no-progress --full-test-iw-samples 0 --latent-dims 4 --hidden-dims 16",
        "examples/ddp_svi.py": "--limit 600 --epochs 1 --latent-dim 4 --hidden-dim 16 --elbo-samples 2 --no-progress",
        "examples/dlgm_model_selection.py": "--configs 2 --epochs 1 --test-limit 20 --iw-samples 5 --elbo-samples 2 "
        "--no-progress",
        "examples/ssvae_mnist.py": "--epochs 1 --hidden 16 --latent-dim 4 --labels 20 --labelled-batch 20 "
        "--batch-size 100 --m1-epochs 1 --m1-min-std 0",
        "examples/rbm_ising.py": "--side 8 --samples 200 --check-samples 100 --hidden-dims 16 4 --epochs 1 "
        "--controls 2 --no-progress",
        "examples/rbm_mnist.py": "--epochs 1 --anneal-from 0 --hidden 16 --test-limit 200 --ais-betas 100 "
        "--ais-runs 10 --no-progress",
        "benchmarks/bench_dlgm_svi.py": "--steps 4 --warmup 1 --batch-size 16 --profile 0",
        "benchmarks/bench_m2_step.py": "--steps 4 --warmup 1 --labelled 10 --unlabelled 20",
        "benchmarks/bench_xnor_gemm.py": "--device cpu --shapes 2x128x128 --cpu-reps 1",
        "benchmarks/bench_binarynet_mlp.py": "--hidden 64 --depth 1 --batches 1 --cpu-reps 1 --device cpu",
        "benchmarks/bench_rbm.py": "--epochs 1 --hidden 16 --limit 500 --ais-betas 100 --ais-runs 10",
        "benchmarks/bench_rbm_early_ll.py": "--seeds 2 --epochs 1 --hidden 16 --limit 300 --ais-betas 20 --ais-runs 5",
        "examples/bayes_binary_mnist.py": "--hidden 16 --width 4 --epochs 1 --test-limit 100 --num-samples 2 "
        "--calibration 200 --no-progress",
        "benchmarks/bench_bayes_binary.py": "--hidden 32 --samples 1 2 --batches 1 --rounds 1 --warmup 0 --device cpu",
        "benchmarks/bench_bayes_binary_convnet.py": "--width 4 --hidden 16 --samples 2 --batches 1 --rounds 1 "
        "--warmup 0",
        "examples/draw_mnist.py": "--epochs 1 --steps 2 --hidden-dim 16 --z-dim 4 --test-limit 10 --iw-samples 5 "
        "--elbo-samples 2 --no-figures --no-progress",
        "examples/sbn_mnist.py": "--epochs 1 --test-limit 10 --iw-samples 5 --elbo-samples 2 --latent-dims 4 "
        "--no-progress",
        "benchmarks/bench_control_variates.py": "--latent-dims 4 --batch-size 10 --pretrain-steps 2 --baseline-steps 2 "
        "--draws 3 --train-steps 2 --eval-every 1 --eval-images 20 --limit 200",
        "benchmarks/bench_binary_rows.py": "--calls 1 --batch 4 --visible 16 --hidden 8 --densities 0.2",
        "benchmarks/bench_bernoulli.py": "--calls 1 --shapes 4x8",
    }.items()
}
NO_DATA = {
    "benchmarks/bench_xnor_gemm.py",
    "benchmarks/bench_bayes_binary.py",
    "examples/rbm_ising.py",
    "benchmarks/bench_bayes_binary_convnet.py",
    "benchmarks/bench_binary_rows.py",
    "benchmarks/bench_bernoulli.py",
}
"""Scripts without a ``--data`` flag (they read no data set)."""
CLI_TINY = {
    "data fetch": ["--no-progress"],
    "data list": [],
    "tour": ["--quick", "--no-progress", "--sections", "kernels"],  # the whole quick tour runs in test_tour.py
    # the model commands (docs/cli.md); evaluate and sample first get a run trained with the train entry
    "train dlgm": [
        "--limit",
        "600",
        "--validation",
        "100",
        "--epochs",
        "1",
        "--test-limit",
        "20",
        "--iw-samples",
        "10",
        "--elbo-samples",
        "2",
        "--impute-images",
        "0",
        "--latent-dims",
        "4",
        "--hidden-dims",
        "16",
        "--no-figures",
        "--no-progress",
    ],
    "evaluate dlgm": [
        "--test-limit",
        "20",
        "--iw-samples",
        "10",
        "--elbo-samples",
        "2",
        "--impute-images",
        "0",
        "--no-figures",
        "--no-progress",
    ],
    "sample dlgm": ["--num", "10"],
}
"""Per ``pyro-bdl`` command (its first two words), the flags appended when it runs."""
MNIST_LIMIT = ["--limit", "1200"]
"""Added to MNIST commands that do not set ``--validation`` themselves."""
TINY_GRID = {"gamma(1,0.1)": {"noise_prior": (1.0, 0.1), "lr": 1e-2, "min_steps": 20}}


def _commands_in(text: str) -> list[str]:
    commands, pending = [], ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        match = COMMAND.match(line)
        if match:
            commands.append(" ".join(match.group(1).split(" #")[0].split()))
        commands.extend(" ".join(inline.split()) for inline in INLINE.findall(line))
    return commands


def documented_commands() -> list[tuple[str, str]]:
    """``(where, command)`` for every command shown in a script's help or a doc page."""
    found = []
    sources = sorted(REPO.glob("examples/*.py")) + sorted(REPO.glob("benchmarks/bench_*.py"))
    for path in sources:
        module_doc = re.match(r'\s*"""(.*?)"""', path.read_text(), re.S)
        for command in _commands_in(module_doc.group(1) if module_doc else ""):
            found.append((f"{path.relative_to(REPO)} --help", command))
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for command in _commands_in(path.read_text()):
            found.append((str(path.relative_to(REPO)), command))
    return found


def documented_cli_commands() -> list[tuple[str, str]]:
    """``(where, arguments)`` for every ``pyro-bdl ...`` line in a code block of the README and the doc pages."""
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        in_code = False
        for line in path.read_text().splitlines():
            if line.strip().startswith("```"):
                in_code = not in_code
                continue
            match = CLI_COMMAND.match(line.strip()) if in_code else None
            if match:
                found.append((str(path.relative_to(REPO)), " ".join(match.group(1).split(" #")[0].split())))
    return found


def cli_key(arguments: list[str]) -> str:
    """The command's words: ``data fetch``, ``tour`` (options and their values excluded)."""
    return " ".join(word for word in arguments[:2] if not word.startswith("-"))


COMMANDS = documented_commands()
IDS = [f"{where}: {command}" for where, command in COMMANDS]
CLI_COMMANDS = documented_cli_commands()
CLI_IDS = [f"{where}: pyro-bdl {command}" for where, command in CLI_COMMANDS]


def test_the_docs_and_help_texts_show_commands_for_every_script():
    shown = {command.split()[0] for _, command in COMMANDS}
    assert shown == set(TINY), "a script without a documented command, or a TINY entry without a script"


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=IDS)
def test_documented_command_parses_as_written(where, command):
    script, *argv = shlex.split(command)
    module = load_script(script)
    try:
        module.parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"{where}: `{command}` is refused by its own argument checks (exit {exit_.code})")


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=IDS)
def test_documented_command_runs_at_tiny_size(where, command, tmp_path, monkeypatch, request):
    script, *argv = shlex.split(command)
    data_folder = request.getfixturevalue("uci_root" if "bnn_uci" in script else "mnist_root").parent
    argv = [flag for flag in argv if flag != "--record"]  # never write the recorded numbers from a test
    extra = [*TINY[script]] + (["--data", str(data_folder)] if script not in NO_DATA else [])
    if script.startswith("examples/") and "mnist" in script and "--validation" not in argv:
        extra += MNIST_LIMIT  # a sixth of it is held out, as of any documented --limit
    if "--device" in argv and not torch.cuda.is_available():
        extra += ["--device", "cpu"]  # a GPU command, run on the CPU here
    if script.startswith("benchmarks/"):
        # a subprocess: benchmarks switch Pyro's and torch's validation globally
        done = run_script([script, *argv, *extra, "--out", str(tmp_path / "result.json")], cwd=REPO, timeout=300)
        assert done.returncode == 0, f"{where}: `{command}` failed:\n{done.stderr[-3000:]}"
        assert f"results written to {tmp_path / 'result.json'}" in done.stdout
        return
    module = load_script(script)
    if script == "examples/bnn_uci.py":
        monkeypatch.setattr(module, "GRID", TINY_GRID)
    module.main(module.parse_args([*argv, *extra, "--out", str(tmp_path / "out")]))


def test_the_collector_reads_continued_lines_comments_and_inline_commands():
    text = "x\n    python examples/a.py --x 1 \\\n    --y 2   # note\nsee `python benchmarks/b.py --q` here\n"
    assert _commands_in(text) == ["examples/a.py --x 1 --y 2", "benchmarks/b.py --q"]


def test_every_documented_pyro_bdl_command_has_a_tiny_entry():
    assert CLI_COMMANDS, "the docs show no pyro-bdl command line"
    assert {cli_key(shlex.split(command)) for _, command in CLI_COMMANDS} <= set(CLI_TINY)


@pytest.mark.parametrize(("where", "command"), CLI_COMMANDS, ids=CLI_IDS)
def test_documented_pyro_bdl_command_parses_as_written(where, command):
    argv = shlex.split(command)
    try:
        build_parser(argv[0]).parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"{where}: `pyro-bdl {command}` is refused by its parser (exit {exit_.code})")


@pytest.mark.parametrize(("where", "command"), CLI_COMMANDS, ids=CLI_IDS)
def test_documented_pyro_bdl_command_runs(where, command, tmp_path, request, monkeypatch):
    argv = shlex.split(command)
    extra = list(CLI_TINY[cli_key(argv)])
    if cli_key(argv) == "data fetch":
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        mnist, uci = request.getfixturevalue("mnist_root"), request.getfixturevalue("uci_root")
        names = build_parser("data").parse_args(argv).names if argv[2] == "uci" else []
        site = mirror_site(tmp_path / "site", mnist=mnist if argv[2] == "mnist" else None, uci=uci, uci_names=names)
        with serve(site) as server:
            code = pyro_bdl_main([*argv, *extra, "--to", str(tmp_path / "data"), "--base-url", server.url + argv[2]])
        assert code == 0, f"{where}: `pyro-bdl {command}` failed"
        assert server.requests
        return
    if cli_key(argv) == "tour":
        extra += ["--out", str(tmp_path / "tour")]
    if argv[0] in ("train", "evaluate", "sample"):
        monkeypatch.chdir(tmp_path)  # the documented run folders are relative
        if argv[0] != "train":  # a finished tiny run where the command reads one
            train = ["train", argv[1], "--sample-data", *CLI_TINY[f"train {argv[1]}"], "--out", argv[2]]
            assert pyro_bdl_main(train) == 0
    assert pyro_bdl_main([*argv, *extra]) == 0, f"{where}: `pyro-bdl {command}` failed"
