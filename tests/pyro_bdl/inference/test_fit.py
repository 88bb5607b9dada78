"""fit: conjugate answers, per-datum bookkeeping, early stopping, bit-exact resume, bad input."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.nn import PyroModule, PyroParam
from torch import nn

from pyro_bdl.checkpoint import load_checkpoint
from pyro_bdl.inference import CHECKPOINT_FORMAT, EarlyStopping, FitState, fit

pytestmark = pytest.mark.usefixtures("pyro_state")


def quiet(**kwargs):
    return {"progress": False, **kwargs}


# --- global latent: mu ~ N(0, PRIOR), y_n ~ N(mu, NOISE); guide q(mu) = N(loc, scale) ---------------------

PRIOR, NOISE = 3.0, 0.8


def global_model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("obs", dist.Normal(mu, NOISE), obs=y)


def global_guide(y):
    loc = pyro.param("loc", torch.tensor(0.0))
    scale = pyro.param("scale", torch.tensor(0.5), constraint=dist.constraints.positive)
    pyro.sample("mu", dist.Normal(loc, scale))


def global_posterior(y):
    precision = 1 / PRIOR**2 + y.shape[0] / NOISE**2
    return (y.sum() / NOISE**2 / precision).item(), precision**-0.5


def test_learns_global_posterior_with_minibatch_scaling():
    y = 1.7 + NOISE * torch.randn(200)
    optim = pyro.optim.ClippedAdam({"lr": 0.1, "lrd": 0.99})
    result = fit(global_model, global_guide, y, optim=optim, epochs=100, batch_size=50, **quiet())
    loc, scale = global_posterior(y)
    # posterior sd 0.057; the noise left after 400 steps of decaying step size is well below it
    assert abs(pyro.param("loc").item() - loc) < 0.03
    # scaling only the data plate by N / B matters: scaling every site (or none) would give 2x the scale
    assert abs(pyro.param("scale").item() / scale - 1) < 0.25
    assert len(result.history) == 100 and result.best_epoch is None and not result.stopped_early
    assert result.history[-1]["train_elbo"] > result.history[0]["train_elbo"]


def test_global_validation_elbo_is_minus_loss_per_datum():
    y = 1.0 + NOISE * torch.randn(30)
    y_val = 0.5 + NOISE * torch.randn(12)
    optim = pyro.optim.Adam({"lr": 0.0})
    result = fit(global_model, global_guide, y, optim=optim, epochs=1, batch_size=30, validation_data=y_val,
                 validation_samples=1000, **quiet())  # fmt: skip
    loc, scale = 0.0, 0.5  # the initial guide, unchanged at lr 0
    expected_log_lik = dist.Normal(loc, NOISE).log_prob(y_val).sum() - y_val.shape[0] * scale**2 / (2 * NOISE**2)
    kl = torch.distributions.kl_divergence(dist.Normal(loc, scale), dist.Normal(0.0, PRIOR))
    expected = ((expected_log_lik - kl) / y_val.shape[0]).item()
    assert abs(result.history[0]["validation_elbo"] - expected) < 0.05  # MC standard error 0.01
    assert result.best_epoch == 1 and result.best_validation_elbo == result.history[0]["validation_elbo"]


# --- amortised: z_n ~ N(0, 1), y_n ~ N(z_n, 1); the guide N(y/2 + shift, sqrt(1/2)) is exact at shift 0 -------


def local_model(y):
    with pyro.plate("data", y.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
        pyro.sample("obs", dist.Normal(z, 1.0), obs=y)


def shift_guide(y):
    shift = pyro.param("shift", torch.tensor(0.0, dtype=y.dtype))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("z", dist.Normal(y / 2 + shift, math.sqrt(0.5)))


def evidence(y):
    return dist.Normal(torch.zeros((), dtype=y.dtype), math.sqrt(2.0)).log_prob(y)


def test_per_datum_bookkeeping_against_closed_form():
    """At lr 0 the exact guide gives log w_n = log p(y_n) for every draw, so every ELBO is known."""
    y = 2 * torch.randn(10, dtype=torch.float64)
    y_val = 2 * torch.randn(7, dtype=torch.float64)
    result = fit(local_model, shift_guide, y, optim=pyro.optim.Adam({"lr": 0.0}), epochs=2, batch_size=4,
                 validation_data=y_val, validation_samples=3, **quiet())  # fmt: skip
    for row in result.history:  # batches of 4, 4, 2: weighting by batch size gives the exact mean
        assert row["train_elbo"] == pytest.approx(evidence(y).mean().item(), abs=1e-12)
        assert row["validation_elbo"] == pytest.approx(evidence(y_val).mean().item(), abs=1e-12)
        assert row["seconds"] > 0
    assert [row["epoch"] for row in result.history] == [1, 2]


def test_transform_batch_applies_to_training_batches_only():
    y = 2 * torch.randn(10, dtype=torch.float64)
    y_val = 2 * torch.randn(6, dtype=torch.float64)
    seen = []

    def shift_by_three(batch):
        seen.append(batch.clone())
        return (batch + 3.0,)

    result = fit(local_model, shift_guide, y, optim=pyro.optim.Adam({"lr": 0.0}), epochs=1, batch_size=4,
                 validation_data=y_val, transform_batch=shift_by_three, **quiet())  # fmt: skip
    assert result.history[0]["train_elbo"] == pytest.approx(evidence(y + 3).mean().item(), abs=1e-12)
    assert result.history[0]["validation_elbo"] == pytest.approx(evidence(y_val).mean().item(), abs=1e-12)
    training_rows = set(y.tolist())
    assert all(set(batch.tolist()) <= training_rows for batch in seen)
    epoch_rows = torch.cat(seen[-3:])  # the epoch's three batches (the first call set up the params)
    assert sorted(epoch_rows.tolist()) == sorted(y.tolist())


def test_transform_batch_must_return_a_tuple():
    with pytest.raises(TypeError, match=r"transform_batch must return a tuple.*\(x,\)"):
        fit(local_model, shift_guide, torch.randn(8), optim=pyro.optim.Adam({"lr": 0.1}), epochs=1, batch_size=4,
            transform_batch=lambda x: x + 1, **quiet())  # fmt: skip


# --- early stopping: validation data far from the training data, so the validation ELBO keeps falling -------


def far_validation_run(epochs, patience=None, restore_best=True):
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    y = NOISE * torch.randn(64)
    y_val = 1.5 + NOISE * torch.randn(16)

    def guide(y):
        loc = pyro.param("loc", torch.tensor(1.5))
        scale = pyro.param("scale", torch.tensor(0.05), constraint=dist.constraints.positive)
        pyro.sample("mu", dist.Normal(loc, scale))

    result = fit(global_model, guide, y, optim=pyro.optim.Adam({"lr": 0.1}), epochs=epochs, batch_size=16,
                 validation_data=y_val, validation_samples=20, patience=patience, restore_best=restore_best,
                 **quiet())  # fmt: skip
    return result, {name: value.detach().clone() for name, value in pyro.get_param_store().named_parameters()}


def test_early_stopping_and_restore_best():
    stopped, best_params = far_validation_run(epochs=10, patience=2)
    assert stopped.stopped_early and stopped.best_epoch == 1
    assert [row["epoch"] for row in stopped.history] == [1, 2, 3]
    elbos = [row["validation_elbo"] for row in stopped.history]
    assert elbos[0] > elbos[1] > elbos[2] and stopped.best_validation_elbo == elbos[0]
    _, one_epoch = far_validation_run(epochs=1)
    assert all(torch.equal(best_params[name], one_epoch[name]) for name in one_epoch)
    last, last_params = far_validation_run(epochs=10, patience=2, restore_best=False)
    _, three_epochs = far_validation_run(epochs=3, restore_best=False)
    assert without_seconds(last.history) == without_seconds(stopped.history)
    assert all(torch.equal(last_params[name], three_epochs[name]) for name in three_epochs)
    assert not all(torch.equal(last_params[name], one_epoch[name]) for name in one_epoch)


def test_early_stopping_option_object_with_min_delta():
    """EarlyStopping(patience, min_delta, restore_best) is what patience= / restore_best= spell."""
    shorthand, shorthand_params = far_validation_run(epochs=10, patience=2)
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    y, y_val = NOISE * torch.randn(64), 1.5 + NOISE * torch.randn(16)

    def guide(y):
        loc = pyro.param("loc", torch.tensor(1.5))
        scale = pyro.param("scale", torch.tensor(0.05), constraint=dist.constraints.positive)
        pyro.sample("mu", dist.Normal(loc, scale))

    def run(option):
        return fit(global_model, guide, y, optim=pyro.optim.Adam({"lr": 0.1}), epochs=10, batch_size=16,
                   validation_data=y_val, validation_samples=20, early_stopping=option, **quiet())  # fmt: skip

    result = run(EarlyStopping(patience=2))
    assert without_seconds(result.history) == without_seconds(shorthand.history) and result.stopped_early
    params = dict(pyro.get_param_store().named_parameters())
    assert all(torch.equal(params[name], shorthand_params[name]) for name in shorthand_params)
    # with a min_delta no later epoch can beat, training stops after patience epochs without improvement
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    y, y_val = NOISE * torch.randn(64), 1.5 + NOISE * torch.randn(16)
    strict = run(EarlyStopping(patience=4, min_delta=1e6))
    assert [row["epoch"] for row in strict.history] == [1, 2, 3, 4, 5] and strict.best_epoch == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"patience": 0}, ValueError, "patience must be an int >= 1 or None, got 0"),
        ({"min_delta": -0.1}, ValueError, "min_delta must be a finite number >= 0"),
        ({"restore_best": 1}, TypeError, "restore_best must be a bool"),
    ],
)
def test_early_stopping_checks_its_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        EarlyStopping(**kwargs)


def test_early_stopping_and_its_shorthand_do_not_mix():
    with pytest.raises(ValueError, match="either early_stopping or patience/restore_best"):
        call_fit(validation_data=torch.randn(3), early_stopping=EarlyStopping(patience=2), patience=2)
    with pytest.raises(ValueError, match="patience needs validation_data"):
        call_fit(early_stopping=EarlyStopping(patience=2))
    with pytest.raises(TypeError, match="early_stopping must be an EarlyStopping"):
        call_fit(early_stopping=3)


def test_fit_state_round_trips_through_state_dict():
    """FitState.state_dict() -> load_state_dict() on fresh objects restores params, optimizer, RNGs and progress."""
    y = torch.randn(8)
    optim = pyro.optim.Adam({"lr": 0.1})
    fit(global_model, global_guide, y, optim=optim, epochs=2, batch_size=4, **quiet())
    names = ("loc", "scale")
    config = {"num_data": 8}
    state = FitState(optim, names, config, torch.Generator().manual_seed(3))
    state.epoch, state.bad_epochs = 2, 1
    saved = state.state_dict()
    assert saved["format"] == CHECKPOINT_FORMAT and set(saved["optim"]) == set(names)
    expected_draw = torch.rand(3)
    expected_shuffle = torch.randperm(8, generator=state.shuffle)
    with torch.no_grad():
        pyro.param("loc").unconstrained().add_(5.0)
    fresh = FitState(pyro.optim.Adam({"lr": 0.1}), names, config, torch.Generator())
    fresh.load_state_dict(saved)
    assert (fresh.epoch, fresh.bad_epochs) == (2, 1)
    assert torch.equal(pyro.param("loc").unconstrained(), saved["params"]["loc"])
    assert torch.equal(torch.rand(3), expected_draw)
    assert torch.equal(torch.randperm(8, generator=fresh.shuffle), expected_shuffle)
    assert fresh.optim.get_state() == {}  # consumed by the next step, as PyroOptim.set_state documents
    with pytest.raises(ValueError, match="was written by a run with"):
        FitState(pyro.optim.Adam({"lr": 0.1}), names, {"num_data": 9}, torch.Generator()).load_state_dict(saved)


# --- resume: an amortised model with a neural encoder, a noisy transform and validation ---------------------


class Encoder(PyroModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
        self.log_scale = PyroParam(torch.zeros(2))

    def forward(self, y):
        with pyro.plate("data", y.shape[-2]):
            pyro.sample("z", dist.Normal(self.net(y), self.log_scale.exp()).to_event(1))


class Decoder(PyroModule):
    def __init__(self):
        super().__init__()
        self.weight = PyroParam(torch.eye(2) * 0.5)
        self.noise = PyroParam(torch.ones(2), constraint=dist.constraints.positive)

    def forward(self, y):
        with pyro.plate("data", y.shape[-2]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("obs", dist.Normal(z @ self.weight.T, self.noise).to_event(1), obs=y)


def jitter(y):
    return (y + 0.1 * torch.randn_like(y),)


DATA = torch.randn(50, 2) @ torch.tensor([[1.0, 0.4], [0.0, 0.6]])


def fresh_pair(rng_seed=0):
    """New modules (same initialisation), store and optimizer, as in a new process; then seed the global RNG."""
    pyro.clear_param_store()
    torch.manual_seed(7)
    pair, optim = (Decoder(), Encoder()), pyro.optim.Adam({"lr": 0.02})
    pyro.set_rng_seed(rng_seed)
    return pair, optim


def resumable_fit(epochs, path, rng_seed=0, transform=jitter, pair=None, optim=None):
    if pair is None:
        pair, optim = fresh_pair(rng_seed)
    result = fit(*pair, DATA[:40], optim=optim, epochs=epochs, batch_size=16, validation_data=DATA[40:],
                 transform_batch=transform, checkpoint_path=path, **quiet())  # fmt: skip
    params = {name: value.detach().clone() for name, value in pyro.get_param_store().named_parameters()}
    return result, params


def without_seconds(history):
    return [{key: value for key, value in row.items() if key != "seconds"} for row in history]


def assert_same_run(first, second):
    (result_a, params_a), (result_b, params_b) = first, second
    assert without_seconds(result_a.history) == without_seconds(result_b.history)
    assert (result_a.best_epoch, result_a.best_validation_elbo) == (result_b.best_epoch, result_b.best_validation_elbo)
    assert params_a.keys() == params_b.keys()
    for name in params_a:
        assert torch.equal(params_a[name], params_b[name]), name


def test_resumed_run_is_bit_identical(tmp_path):
    straight = resumable_fit(4, tmp_path / "straight.pt")
    resumable_fit(2, tmp_path / "interrupted.pt")
    # a new "process": fresh modules, store, optimizer and a different global seed; the checkpoint restores all
    resumed = resumable_fit(4, tmp_path / "interrupted.pt", rng_seed=123)
    assert_same_run(straight, resumed)
    state = load_checkpoint(tmp_path / "interrupted.pt")
    assert state["format"] == CHECKPOINT_FORMAT and state["epoch"] == 4 and len(state["history"]) == 4
    assert set(state["params"]) == set(straight[1])
    # a finished run resumed again trains no further
    again = resumable_fit(4, tmp_path / "interrupted.pt", rng_seed=5)
    assert_same_run(straight, again)


def test_ctrl_c_mid_epoch_keeps_last_checkpoint_and_resumes_bit_identical(tmp_path):
    straight = resumable_fit(4, tmp_path / "straight.pt")
    calls = []

    def interrupt_in_epoch_three(y):
        calls.append(1)
        if len(calls) == 1 + 3 * 2 + 2:  # setup call, two epochs of 3 batches, then the second batch of epoch 3
            raise KeyboardInterrupt
        return jitter(y)

    path = tmp_path / "interrupted.pt"
    pair, optim = fresh_pair()
    with pytest.raises(KeyboardInterrupt):
        resumable_fit(4, path, transform=interrupt_in_epoch_three, pair=pair, optim=optim)
    assert load_checkpoint(path)["epoch"] == 2
    # the optimizer already stepped into epoch 3 and its state cannot be replaced: resuming needs a fresh one
    with pytest.raises(ValueError, match=r"optim has already taken steps.*pass a fresh pyro\.optim optimizer"):
        resumable_fit(4, path, pair=pair, optim=optim)
    # same process and modules, which already stepped into epoch 3, a fresh optimizer: resuming rewinds them
    resumed = resumable_fit(4, path, pair=pair, optim=pyro.optim.Adam({"lr": 0.02}))
    assert_same_run(straight, resumed)


def test_epochs_zero_trains_nothing():
    y = torch.randn(8)
    result = fit(global_model, global_guide, y, optim=pyro.optim.Adam({"lr": 0.1}), epochs=0, batch_size=4, **quiet())
    assert result.history == [] and pyro.param("loc").item() == 0.0


def test_progress_bar_runs(capsys):
    fit(global_model, global_guide, torch.randn(8), optim=pyro.optim.Adam({"lr": 0.1}), epochs=2, batch_size=4)
    assert "fit" in capsys.readouterr().err


# --- checkpoints that do not belong to this run --------------------------------------------------------------


def global_fit(path, **kwargs):
    options = {"optim": pyro.optim.Adam({"lr": 0.1}), "epochs": 1, "batch_size": 4, "checkpoint_path": path}
    return fit(global_model, global_guide, torch.arange(8.0), **{**options, **kwargs}, **quiet())


def test_corrupt_checkpoint(tmp_path):
    path = tmp_path / "fit.pt"
    path.write_bytes(b"not a torch file at all")
    with pytest.raises(ValueError, match="could not read the checkpoint"):
        global_fit(path)
    global_fit(path, resume=False)  # overwrites it
    assert load_checkpoint(path)["epoch"] == 1


def test_foreign_checkpoints(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match=r"not a checkpoint of pyro_bdl\.inference\.fit"):
        global_fit(path)
    path = tmp_path / "fit.pt"
    global_fit(path)
    with pytest.raises(ValueError, match="batch_size"):
        global_fit(path, batch_size=2)
    pyro.clear_param_store()
    with pytest.raises(ValueError, match=r"params missing from it \['shift'\]"):
        fit(local_model, shift_guide, torch.arange(8.0), optim=pyro.optim.Adam({"lr": 0.1}), epochs=2, batch_size=4,
            checkpoint_path=path, **quiet())  # fmt: skip


# --- bad input -------------------------------------------------------------------------------------------------


def call_fit(data=None, **overrides):
    kwargs = {"optim": pyro.optim.Adam({"lr": 0.1}), "epochs": 1, "batch_size": 4, **overrides}
    return fit(global_model, global_guide, torch.randn(8) if data is None else data, **kwargs, **quiet())


@pytest.mark.parametrize(
    ("data", "overrides", "error", "match"),
    [
        ((torch.randn(8), torch.randn(7)), {}, ValueError, r"train_data must agree on dim 0.*\(8,\).*\(7,\)"),
        ((torch.randn(8), torch.tensor([1.0, math.nan] * 4)), {}, ValueError, r"train_data\[1\] contains NaN"),
        (torch.tensor(1.0), {}, ValueError, "train_data must have the data points along dim 0"),
        (torch.zeros(0), {}, ValueError, "train_data has no data points"),
        ((), {}, ValueError, "train_data must hold at least one tensor"),
        ([torch.randn(8), [1, 2]], {}, TypeError, r"train_data\[1\] must be a torch.Tensor"),
        ("abc", {}, TypeError, "train_data must be a tensor or a sequence of tensors"),
        (None, {"batch_size": 0}, ValueError, "batch_size must be an int >= 1, got 0"),
        (None, {"epochs": -1}, ValueError, "epochs must be an int >= 0"),
        (None, {"epochs": 2.0}, ValueError, "epochs must be an int"),
        (None, {"validation_samples": 0}, ValueError, "validation_samples"),
        (None, {"patience": 2}, ValueError, "patience needs validation_data"),
        (None, {"patience": 0, "validation_data": torch.randn(3)}, ValueError, "patience must be"),
        (None, {"validation_data": torch.tensor([math.nan])}, ValueError, "validation_data contains NaN"),
        (None, {"validation_data": (torch.randn(3), torch.randn(3))}, ValueError, "validation_data must hold 1"),
        (None, {"optim": "adam"}, TypeError, "optim must be a pyro.optim optimizer"),
        (None, {"loss": "elbo"}, TypeError, "loss must be a pyro.infer ELBO"),
        (None, {"transform_batch": 3}, TypeError, "transform_batch must be callable"),
    ],
)
def test_bad_input(data, overrides, error, match):
    with pytest.raises(error, match=match):
        call_fit(data, **overrides)


def test_torch_optimizer_is_rejected():
    with pytest.raises(TypeError, match="got Adam"):
        call_fit(optim=torch.optim.Adam([torch.zeros(1, requires_grad=True)]))


def test_default_loss_is_trace_elbo_and_custom_loss_accepted():
    result = call_fit(loss=Trace_ELBO(num_particles=2), epochs=2)
    assert len(result.history) == 2
