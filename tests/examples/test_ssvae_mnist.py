"""The M2 example runs end to end on a tiny slice of real MNIST, writes its results and figures, and resumes exactly."""

import json

import pyro
import pytest

from tests.examples.helpers import load_example

TINY = ["--limit", "2000", "--validation", "500", "--labels", "20", "--batch-size", "100", "--labelled-batch", "20"]
TINY += ["--hidden", "64", "--latent-dim", "8", "--lr", "3e-3", "--threads", "1"]


@pytest.fixture(autouse=True)
def clean_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def run(mnist_root, out, *flags):
    example = load_example("ssvae_mnist")
    pyro.clear_param_store()
    return example.main(example.parse_args([*TINY, "--data", str(mnist_root), "--out", str(out), *flags]))


def test_ssvae_learns_from_few_labels_and_writes_results(mnist_root, tmp_path):
    """1,500 real training images, 20 labels, 3 epochs: the classifier learns (chance is 90% error) and
    the supervised-only baseline is reported beside it. (That M2 beats it is tested on a two-digit subset
    in test_ssvae_beats_supervised.py.)"""
    results = run(mnist_root, tmp_path, "--epochs", "3", "--baseline", "--unlabelled-warmup", "2")
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["test_error"] == pytest.approx(results["test_error"])
    assert [entry["epoch"] for entry in written["history"]] == [1, 2, 3]
    assert results["validation_error"] < 0.8
    assert 0 < results["supervised_only"]["test_error"] < 0.9
    assert 0 <= results["test_calibration"]["ece"] <= 1
    assert written["environment"]["cpu"]
    for name in ("analogies", "class_samples"):
        assert (tmp_path / f"{name}.png").read_bytes().startswith(b"\x89PNG")


def test_m1_plus_m2_trains_on_the_dlgm_features_with_the_baseline(mnist_root, tmp_path):
    """(With the decoder's own Gaussian scale here; the label-draw test below runs the default, a learned one.)"""
    results = run(mnist_root, tmp_path, "--m1", "--m1-epochs", "1", "--epochs", "1", "--baseline",
                  "--observation-scale", "amortised")  # fmt: skip
    assert results["m1"] and (tmp_path / "m1_checkpoint.pt").exists()
    assert results["settings"]["observation_scale"] == "amortised"
    assert 0 < results["supervised_only"]["test_error"] < 0.9  # features of a 1-epoch M1 still classify
    assert 0 <= results["test_error"] <= 1
    features = results["m1_features"]
    assert len(features["kl_per_latent"]) == 50  # every M1 latent kept (--m1-min-std 0 by default)
    assert features["kl_per_latent"] == sorted(features["kl_per_latent"])[::-1]
    assert features["active_latents"] == sum(kl > 0.1 for kl in features["kl_per_latent"])
    assert 0 <= features["nearest_neighbour_validation_error"] < 0.9
    assert features["train_elbo_per_image"] < 0


def test_label_draws_with_the_same_m1_seed_train_the_same_m1(mnist_root, tmp_path):
    """M1 sees no labels: its rows (the file's order), initialisation, noise and shuffling come from --m1-seed
    alone, so two label draws that share it get the same M1 (and may share its checkpoint)."""
    import torch

    flags = ("--m1", "--m1-epochs", "1", "--m1-seed", "3", "--epochs", "1")
    first = run(mnist_root, tmp_path / "a", "--seed", "0", *flags)["m1_features"]
    other_draw = run(mnist_root, tmp_path / "b", "--seed", "1", *flags)["m1_features"]
    assert first["train_elbo_per_image"] == other_draw["train_elbo_per_image"]
    saved = [torch.load(tmp_path / name / "m1_checkpoint.pt", weights_only=True) for name in ("a", "b")]
    assert saved[0]["params"].keys() == saved[1]["params"].keys()
    for name, value in saved[0]["params"].items():
        assert torch.equal(value, saved[1]["params"][name]), name


def test_m1_defaults_plain_adam_for_m1_and_a_small_z_for_m2_on_its_features():
    import torch
    from pyro.optim.clipped_adam import ClippedAdam

    example = load_example("ssvae_mnist")
    plain = example.m1_optimizer(example.parse_args(["--m1"]))
    assert plain.pt_optim_constructor is torch.optim.Adam and plain.pt_optim_args == {"lr": 1e-3}
    clipped = example.m1_optimizer(example.parse_args(["--m1", "--m1-clip-norm", "10", "--m1-lr", "2e-3"]))
    assert clipped.pt_optim_constructor is ClippedAdam and clipped.pt_optim_args == {"lr": 2e-3, "clip_norm": 10.0}
    sizes = [example.parse_args(flags).latent_dim for flags in ([], ["--m1"], ["--m1", "--latent-dim", "8"])]
    assert sizes == [50, 4, 8]
    chosen = example.parse_args(["--m1", "--seed", "4"])
    assert (chosen.m1_epochs, chosen.m1_seed) == (100, 4)  # M1's length chosen on validation; its seed follows --seed


def test_m1_summary_gives_each_latents_kl_and_the_nearest_labelled_neighbours_error():
    """The KL is the analytic KL(N(m, s^2) || N(0, 1)) averaged over training rows; the neighbour probe
    is right where the classes are far apart and wrong where the labelled rows carry the other label."""
    import torch

    example = load_example("ssvae_mnist")
    labelled_y = torch.tensor([0, 1])
    labelled_x = torch.tensor([[-5.0, 0.0], [5.0, 0.0]])
    unlabelled_x = torch.randn(6, 2)
    scale = torch.rand(8, 2) + 0.5
    data = {"labelled_x": labelled_x, "labelled_y": labelled_y, "unlabelled_x": unlabelled_x,
            "labelled_x_scale": scale[:2], "unlabelled_x_scale": scale[2:],
            "validation_x": torch.tensor([[-4.0, 1.0], [4.0, -1.0], [3.0, 0.0]]),
            "validation_y": torch.tensor([0, 1, 0])}  # fmt: skip
    summary = example.m1_summary(data)
    mean = torch.cat([labelled_x, unlabelled_x])
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, scale), torch.distributions.Normal(0.0, 1.0)
    )
    assert summary["kl_per_latent"] == pytest.approx(kl.mean(0).sort(descending=True).values.tolist(), abs=1e-4)
    assert summary["active_latents"] == int((kl.mean(0) > 0.1).sum())
    assert summary["nearest_neighbour_validation_error"] == pytest.approx(1 / 3)


def test_ssvae_resumes_to_the_same_result_as_an_uninterrupted_run(mnist_root, tmp_path):
    straight = run(mnist_root, tmp_path / "a", "--epochs", "2")
    run(mnist_root, tmp_path / "b", "--epochs", "1")
    (tmp_path / "b" / ".checkpoint.pt.killed.tmp").write_bytes(b"partial")  # a write cut short by a kill
    resumed = run(mnist_root, tmp_path / "b", "--epochs", "2")
    assert [h["validation_error"] for h in resumed["history"]] == [h["validation_error"] for h in straight["history"]]
    assert resumed["test_error"] == straight["test_error"]
    assert not list((tmp_path / "b").glob("*.tmp"))


def test_m2_checkpoint_refuses_to_resume_on_another_m1s_features(mnist_root, tmp_path):
    """M2's checkpoint records the settings that decide M1's features: a rerun with a longer M1 would train
    M1 on and then continue M2 on other features, so it stops with an error instead, before M1 trains."""
    import torch

    run(mnist_root, tmp_path, "--m1", "--m1-epochs", "1", "--epochs", "1")
    with pytest.raises(ValueError, match="'m1_epochs': 1"):
        run(mnist_root, tmp_path, "--m1", "--m1-epochs", "2", "--epochs", "2")
    assert torch.load(tmp_path / "m1_checkpoint.pt", weights_only=True)["epoch"] == 1  # M1 was not trained on


def test_m2_checkpoint_refuses_to_resume_with_other_training_settings(mnist_root, tmp_path):
    """A rerun into the same folder with another M2 setting (here the weight alpha) would mix two recipes in one
    run: it stops with an error naming the setting; the same settings resume."""
    run(mnist_root, tmp_path, "--epochs", "1")
    with pytest.raises(ValueError, match=r"'alpha': 0\.5"):
        run(mnist_root, tmp_path, "--epochs", "2", "--alpha", "0.5")
    assert [entry["epoch"] for entry in run(mnist_root, tmp_path, "--epochs", "2")["history"]] == [1, 2]


def test_ssvae_refuses_bad_flag_combinations(capsys):
    example = load_example("ssvae_mnist")
    for flags, message in [(["--limit", "100", "--validation", "200"], "--validation must lie in"),
                           (["--labels", "25"], "--labels must be a multiple of the 10 classes"),
                           (["--m1-clip-norm", "0"], "--m1-clip-norm must be positive, got 0.0"),
                           (["--m1-lr", "-1"], "--m1-lr must be positive, got -1.0"),
                           (["--observation-scale", "amortised"], "--observation-scale applies to M1")]:  # fmt: skip
        with pytest.raises(SystemExit):
            example.parse_args(flags)
        assert message in capsys.readouterr().err


@pytest.mark.parametrize(("weighting", "every"), [("count", 1), ("count", 3), ("batch", 3)])
def test_steps_weight_each_part_as_documented(weighting, every):
    """count: over an epoch the labelled and unlabelled weights sum to (steps x) their row counts, an unbiased
    estimate of J^alpha per step; batch: every row weighs 1 (Pyro's SS-VAE example). Labelled steps every ``every``."""
    import torch

    example = load_example("ssvae_mnist")
    args = example.parse_args(["--batch-size", "10", "--labelled-batch", "4", "--labelled-every", str(every),
                               "--weighting", weighting, "--pixels", "intensities"])  # fmt: skip
    data = {"labelled_x": torch.rand(8, 3), "labelled_y": torch.arange(8) % 2, "unlabelled_x": torch.rand(60, 3)}
    epoch = list(example.steps(data, args, torch.Generator().manual_seed(0)))
    assert len(epoch) == 6
    labelled = [parts[0] for parts in epoch if len(parts) == 2]
    assert len(labelled) == len(range(0, 6, every))
    unlabelled_weight = sum(float(parts[-1][2].sum()) for parts in epoch)
    labelled_weight = sum(float(part[2].sum()) for part in labelled)
    if weighting == "count":
        assert unlabelled_weight == pytest.approx(6 * 60)
        assert labelled_weight == pytest.approx(len(labelled) * every * 8)
    else:
        assert unlabelled_weight == pytest.approx(60)
        assert labelled_weight == pytest.approx(4 * len(labelled))
    assert all(bool((parts[-1][1] == -1).all()) for parts in epoch)
    seen = torch.cat([parts[-1][0] for parts in epoch])  # --pixels intensities: the rows as they are, each once
    assert torch.equal(seen.sort(0).values, data["unlabelled_x"].sort(0).values)
