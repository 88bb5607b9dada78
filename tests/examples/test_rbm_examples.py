"""The RBM examples run end to end at tiny size, write results and figures, and the MNIST one resumes exactly."""

import json

import pyro
import pytest
import torch

from tests.examples.helpers import load_example

TINY = ["--limit", "600", "--test-limit", "200", "--hidden", "20", "--ais-betas", "200", "--ais-runs", "20",
        "--no-progress", "--threads", "1"]  # fmt: skip


@pytest.fixture(autouse=True)
def clean_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def run(mnist_root, out, *flags):
    example = load_example("rbm_mnist")
    pyro.clear_param_store()
    return example.main(example.parse_args([*TINY, "--data", str(mnist_root), "--out", str(out), *flags]))


def test_rbm_mnist_writes_scores_with_their_schedule_and_figures(mnist_root, tmp_path):
    results = run(mnist_root, tmp_path, "--epochs", "2", "--persistent")
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["method"] == "PCD-1" and [row["epoch"] for row in written["history"]] == [1, 2]
    for name, betas in (("ais", 200), ("ais_check", 800)):
        score = written["scores"][name]
        assert score["num_betas"] == betas and score["num_runs"] == 20 and 0 < score["ess"] <= 20
        assert score["stderr"] > 0 and -784 < score["test_ll"] < 0
    assert results["scores"]["ais"]["seed"] != results["scores"]["ais_check"]["seed"]
    for name in ("filters", "samples"):
        assert (tmp_path / f"{name}.png").read_bytes().startswith(b"\x89PNG")


def test_rbm_mnist_resumes_exactly(mnist_root, tmp_path):
    """Two epochs in one go, or one epoch and a resumed second (PCD chains, momentum and RNGs restored):
    the same history and the same AIS estimate."""
    flags = ["--persistent", "--no-figures", "--no-ais-check"]
    straight = run(mnist_root, tmp_path / "straight", "--epochs", "2", *flags)
    run(mnist_root, tmp_path / "resumed", "--epochs", "1", *flags)
    resumed = run(mnist_root, tmp_path / "resumed", "--epochs", "2", *flags)
    drop = ("seconds",)
    rows = [[{k: v for k, v in row.items() if k not in drop} for row in r["history"]] for r in (straight, resumed)]
    assert rows[0] == rows[1]
    assert resumed["scores"]["ais"]["log_z"] == pytest.approx(straight["scores"]["ais"]["log_z"], abs=1e-9)


def test_rbm_ising_checks_the_sampler_and_scores_localisation(tmp_path):
    example = load_example("rbm_ising")
    results = example.main(example.parse_args(["--side", "8", "--samples", "300", "--check-samples", "200",
                                               "--hidden-dims", "16", "4", "--epochs", "2", "--controls", "5",
                                               "--blocks", "2", "4", "--out", str(tmp_path)]))  # fmt: skip
    assert [round(c["temperature"], 3) for c in results["sampler_checks"]] == [2.269, 2.0, 2.5]
    assert all(abs(c["z"]) < 5 for c in results["sampler_checks"])
    assert [(row["layer"], row["block"]) for row in results["layers"]] == [(1, 2), (1, 4), (2, 2), (2, 4)]
    assert (tmp_path / "fields_layer1.png").read_bytes().startswith(b"\x89PNG")
    assert all(1 <= row["distinct_best_blocks"] <= row["hidden"] and 0 <= row["mean_abs_cosine"] <= 1 + 1e-6
               for row in results["layers"])  # fmt: skip


def test_distinctness_tells_a_tiling_from_one_repeated_field():
    """Fields on four disjoint blocks: four block sites and |cos| 0; four copies of one field: one site, |cos| 1."""
    example = load_example("rbm_ising")
    tiling = torch.zeros(8, 8, 4)
    for unit, (row, column) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
        tiling[row : row + 4, column : column + 4, unit] = 1.0
    tiling = tiling.reshape(64, 4)
    repeated = tiling[:, :1].repeat(1, 4) * torch.tensor([1.0, -2.0, 0.5, 3.0])
    assert example.distinct_best_blocks(tiling, 8, 4) == 4
    assert example.mean_abs_cosine(tiling) == pytest.approx(0.0)
    assert example.distinct_best_blocks(repeated, 8, 4) == 1
    assert example.mean_abs_cosine(repeated) == pytest.approx(1.0)


def test_rbm_mnist_scores_held_out_training_images_and_parameter_averages(mnist_root, tmp_path):
    """``--validation`` scores the last training images (no test key); each ``--ema`` average gets its own AIS
    scores, and an average with decay ~0 is the trained parameters themselves (same log Z)."""
    results = run(mnist_root, tmp_path, "--epochs", "2", "--persistent", "--validation", "100", "--no-figures",
                  "--ema", "1e-9", "0.5")  # fmt: skip
    assert results["heldout"] == "validation"
    assert "validation_ll" in results["scores"]["ais"] and "test_ll" not in results["scores"]["ais"]
    assert "validation_pseudo_ll" in results["history"][-1]
    averaged = results["scores_averaged"]
    assert list(averaged) == ["ema_1e-09", "ema_0.5"]
    assert "ais_check" in averaged["ema_1e-09"] and "ais_check" not in results["scores"]
    assert "ais_check" not in averaged["ema_0.5"]
    assert averaged["ema_1e-09"]["ais"]["log_z"] == pytest.approx(results["scores"]["ais"]["log_z"], abs=1e-3)
    assert averaged["ema_0.5"]["ais"]["log_z"] != pytest.approx(results["scores"]["ais"]["log_z"], abs=1e-3)
    # the same run scored on the test set (resumed: no training), only the average --ema still names
    scored = run(mnist_root, tmp_path, "--epochs", "2", "--persistent", "--validation", "100", "--no-figures",
                 "--ema", "0.5", "--score-test")  # fmt: skip
    assert scored["heldout"] == "test" and list(scored["scores_averaged"]) == ["ema_0.5"]
    # both models also scored on the validation rows under the same log Z; the better one gets the AIS check
    both = {"trained": scored["scores"], "ema_0.5": scored["scores_averaged"]["ema_0.5"]}
    best = max(both, key=lambda name: both[name]["ais"]["validation_ll"])
    assert scored["headline"] == best and scored["chosen_on_validation"]
    assert "test_ll" in both[best]["ais_check"] and "validation_ll" in both[best]["ais_check"]
    assert all(("ais_check" in both[name]) == (name == best) for name in both)
    assert scored["scores_averaged"]["ema_0.5"]["ais"]["log_z"] == averaged["ema_0.5"]["ais"]["log_z"]


def test_rbm_mnist_fpcd_keeps_its_fast_parameters_in_the_checkpoint(mnist_root, tmp_path):
    """``--fast-lr`` trains FPCD (so labelled), its fast parameters saved with the chains; bad FPCD flags exit."""
    from pyro_bdl.checkpoint import load_checkpoint

    results = run(mnist_root, tmp_path, "--epochs", "1", "--persistent", "--fast-lr", "0.01", "--no-figures",
                  "--no-ais-check")  # fmt: skip
    assert results["method"] == "FPCD-1" and results["settings"]["fast_lr"] == 0.01
    fast = load_checkpoint(tmp_path / "checkpoint.pt")["loss"]["fast"]["rbm"]
    assert [tuple(p.shape) for p in fast] == [(784, 20), (784,), (20,)] and fast[0].abs().max() > 0
    example = load_example("rbm_mnist")
    for flags in (["--fast-lr", "0.01"], ["--persistent", "--fast-lr", "-1"], ["--persistent", "--fast-decay", "1"]):
        with pytest.raises(SystemExit):
            example.parse_args(flags)


def test_rbm_mnist_holds_the_rate_until_anneal_from_then_anneals_with_anneal_k(mnist_root, tmp_path):
    """``--anneal-from 2 --anneal-k 3`` over 4 epochs: the rate stays at --lr for epochs 1-2, then
    follows the line from --lr to --lr-final (the line a run without it follows), and PCD-3 replaces
    PCD-1 for epochs 3-4."""
    example = load_example("rbm_mnist")
    args = example.parse_args(["--epochs", "4", "--lr", "0.01", "--lr-final", "0", "--anneal-from", "2",
                               "--anneal-k", "3", "--k", "1"])  # fmt: skip
    rates = [example.epoch_settings(epoch, args)["lr"] for epoch in range(1, 5)]
    assert rates == pytest.approx([0.01, 0.01, 0.01 * (1 - 2 / 4), 0.01 * (1 - 3 / 4)])
    assert [example.gibbs_sweeps(epoch, args) for epoch in range(1, 5)] == [1, 1, 3, 3]
    results = run(mnist_root, tmp_path, "--epochs", "3", "--persistent", "--anneal-from", "2", "--anneal-k", "2",
                  "--no-figures", "--no-ais-check")  # fmt: skip
    assert results["method"] == "PCD-1, k = 2 after epoch 2"
    assert [row["lr"] for row in results["history"]] == pytest.approx([0.01, 0.01, 0.01 * (1 - 2 / 3)])


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "3", "--anneal-from", "3"], "--anneal-from must lie in"),
    (["--anneal-k", "0", "--anneal-from", "1"], "--anneal-k must be positive"),
])  # fmt: skip
def test_rbm_mnist_refuses_a_bad_anneal(flags, message, capsys):
    example = load_example("rbm_mnist")
    with pytest.raises(SystemExit):
        example.parse_args(flags)
    assert message in capsys.readouterr().err
