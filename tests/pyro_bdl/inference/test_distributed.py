"""Data-parallel SVI: 2 gloo processes on the CPU reach the 1-process parameters; launch errors are one line.

The model is a conjugate Bayesian linear regression (prior N(0, I) on w, Gaussian noise 0.5)
with a global latent outside the data plate and the likelihood inside it, so both kinds of
term and the N / b scaling are exercised:

* ``AutoDelta`` (MAP): the loss and its gradient are deterministic, so the 2-process run
  must repeat the 1-process run up to float32 summation order (all-reduce vs one sum):
  parameters and train ELBOs within ``DETERMINISTIC_ATOL``;
* ``AutoDelta`` initialised from a prior draw seeded per rank: every rank trains from rank 0's
  start (the lazily created params are broadcast before DDP wraps the module);
* ``AutoNormal``: sampling noise differs per rank, so the ranks must hold identical
  parameters (DDP), draw different noise, and both runs must reach the exact Gaussian
  posterior within ``POSTERIOR_ATOL`` (loc and scale), hence each other within twice that.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDelta, AutoNormal, init_to_median, init_to_sample
from pyro.nn import PyroModule, PyroSample

from pyro_bdl.inference.distributed import ELBOLoss, close_process_group, fit_module, init_from_env

NUM_DATA, FEATURES, NOISE = 64, 3, 0.5
BATCH, EPOCHS_DELTA, EPOCHS_NORMAL = 16, 20, 100
DETERMINISTIC_ATOL = 1e-5
POSTERIOR_ATOL = 0.025
"""Exact-posterior tolerance of the stochastic runs (32 particles, Adam lr 0.02): the posterior sd is
0.06-0.07 here, and 4 seeds of the 1-process run landed within 0.008."""


class Regression(PyroModule):
    """``w ~ N(0, I)``, ``y_n ~ N(x_n . w, NOISE)`` in the plate ``data``."""

    def __init__(self) -> None:
        super().__init__()
        self.w = PyroSample(dist.Normal(0.0, 1.0).expand([FEATURES]).to_event(1))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        w = self.w
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("obs", dist.Normal((x * w).sum(-1), NOISE), obs=y)


def regression_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(NUM_DATA, FEATURES, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + NOISE * torch.randn(NUM_DATA, generator=generator)
    return x, y


def exact_posterior(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and marginal sd of ``p(w | x, y)``: precision ``I + X^T X / s^2``."""
    precision = torch.eye(FEATURES, dtype=torch.float64) + x.double().T @ x.double() / NOISE**2
    covariance = torch.linalg.inv(precision)
    return (covariance @ x.double().T @ y.double() / NOISE**2).float(), covariance.diagonal().sqrt().float()


def train(kind: str, init_seed: int = 0) -> dict:
    """Fit the regression with ``AutoDelta`` (``"delta"``; ``"delta_sampled_init"``: initialised by a prior
    draw seeded with ``init_seed``) or ``AutoNormal`` (``"normal"``); params and history."""
    pyro.clear_param_store()
    pyro.set_rng_seed(init_seed)
    model = Regression()
    if kind == "normal":
        guide = AutoNormal(model)
    else:
        guide = AutoDelta(model, init_loc_fn=init_to_sample if kind == "delta_sampled_init" else init_to_median)
    if kind != "normal":
        epochs, optimizer, loss = EPOCHS_DELTA, functools.partial(torch.optim.Adam, lr=0.05), Trace_ELBO()
    else:
        epochs, optimizer = EPOCHS_NORMAL, functools.partial(torch.optim.Adam, lr=0.02)
        loss = Trace_ELBO(num_particles=32, vectorize_particles=True, max_plate_nesting=1)
    result = fit_module(model, guide, regression_data(), optimizer=optimizer, epochs=epochs, batch_size=BATCH,
                        loss=loss, seed=3, progress=False)  # fmt: skip
    params = {name: value.detach().clone() for name, value in guide.named_parameters()}
    params["loc"] = guide.median()["w"].detach().clone()
    if kind == "normal":
        params["scale"] = guide.scales.w.detach().clone()
    return {"params": params, "elbo": [row["train_elbo"] for row in result.history], "noise": torch.randn(4)}


def initial_loc(seed: int) -> torch.Tensor:
    """The ``AutoDelta(init_loc_fn=init_to_sample)`` start of ``w`` after a first call seeded with ``seed``."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = Regression()
    guide = AutoDelta(model, init_loc_fn=init_to_sample)
    guide(*regression_data())
    return guide.median()["w"].detach().clone()


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    launch = init_from_env("gloo", timeout_s=60)
    assert launch is not None and launch.world_size == world_size
    results = {kind: train(kind) for kind in ("delta", "normal")}
    results["delta_sampled_init"] = train("delta_sampled_init", init_seed=rank)  # ranks start apart
    torch.save(results, Path(out) / f"rank{rank}.pt")
    close_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


@pytest.fixture(scope="module")
def one_process_results() -> dict:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {kind: train(kind) for kind in ("delta", "normal", "delta_sampled_init")}
    finally:
        torch.set_num_threads(previous)
        pyro.clear_param_store()


def test_two_processes_repeat_the_deterministic_one_process_run(two_process_results, one_process_results):
    single = one_process_results["delta"]
    for rank, results in enumerate(two_process_results):
        run = results["delta"]
        for name, value in single["params"].items():
            torch.testing.assert_close(run["params"][name], value, atol=DETERMINISTIC_ATOL, rtol=0,
                                       msg=lambda m, r=rank, n=name: f"rank {r}, {n}: {m}")  # fmt: skip
        torch.testing.assert_close(torch.tensor(run["elbo"]), torch.tensor(single["elbo"]), atol=DETERMINISTIC_ATOL,
                                   rtol=1e-5)  # fmt: skip
    # and it trained: the MAP is near the posterior mean
    mean, _ = exact_posterior(*regression_data())
    torch.testing.assert_close(single["params"]["loc"], mean, atol=0.05, rtol=0)


def test_lazily_created_params_start_from_rank_0_on_every_rank(two_process_results, one_process_results):
    """Each rank initialises its AutoDelta from its own prior draw; training starts from rank 0's everywhere.

    DDP's averaged gradients give every rank the same Adam updates, so a rank that kept its own
    start would end exactly that far from rank 0."""
    starts = [initial_loc(seed) for seed in (0, 1)]
    assert (starts[0] - starts[1]).abs().max() > 0.1, "the two ranks' own starts should differ"
    single = one_process_results["delta_sampled_init"]  # initialised with rank 0's seed
    for rank, results in enumerate(two_process_results):
        run = results["delta_sampled_init"]
        torch.testing.assert_close(run["params"]["loc"], single["params"]["loc"], atol=DETERMINISTIC_ATOL, rtol=0,
                                   msg=lambda m, r=rank: f"rank {r}: {m}")  # fmt: skip


def test_stochastic_ranks_stay_in_sync_draw_different_noise_and_reach_the_posterior(
    two_process_results, one_process_results
):
    first, second = (results["normal"] for results in two_process_results)
    for name, value in first["params"].items():
        assert torch.equal(value, second["params"][name]), f"ranks disagree on {name}"
    assert first["elbo"] == second["elbo"]
    assert not torch.equal(first["noise"], second["noise"]), "both ranks draw the same sampling noise"
    mean, sd = exact_posterior(*regression_data())
    for where, run in (("2 processes", first), ("1 process", one_process_results["normal"])):
        torch.testing.assert_close(run["params"]["loc"], mean, atol=POSTERIOR_ATOL, rtol=0, msg=where)
        torch.testing.assert_close(run["params"]["scale"], sd, atol=POSTERIOR_ATOL, rtol=0, msg=where)
    torch.testing.assert_close(first["params"]["loc"], one_process_results["normal"]["params"]["loc"],
                               atol=2 * POSTERIOR_ATOL, rtol=0)  # fmt: skip


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "0"}, "incomplete torch.distributed launch: RANK set but WORLD_SIZE, MASTER_ADDR, MASTER_PORT"),
        ({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}, "RANK must lie in [0, 1]"),
        ({"RANK": "0", "WORLD_SIZE": "two", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}, "WORLD_SIZE must be"),
    ],
)
def test_a_bad_launch_environment_is_one_line(env, message, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as error:
        init_from_env("gloo")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_without_a_launch_nothing_starts(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert init_from_env() is None and not torch_dist.is_initialized()


def test_fit_module_refuses_what_a_torch_optimizer_would_silently_skip(pyro_state):
    x, y = regression_data()

    def model(x, y=None):  # a plain function: its params are not module parameters
        return Regression()(x, y)

    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        ELBOLoss(model, AutoNormal(Regression()))

    class GlobalParam(Regression):
        def forward(self, x, y=None):
            w, shift = self.w, pyro.param("shift", torch.zeros(()))
            with pyro.plate("data", x.shape[0]):
                return pyro.sample("obs", dist.Normal((x * w).sum(-1) + shift, NOISE), obs=y)

    model = GlobalParam()
    with pytest.raises(ValueError, match="param 'shift' is not a parameter of the model or guide module"):
        fit_module(model, AutoNormal(model), (x, y), optimizer=torch.optim.Adam, epochs=1, batch_size=8,
                   progress=False)  # fmt: skip
    model = Regression()
    with pytest.raises(ValueError, match="training on minibatches needs the data plate 'rows' in the model"):
        fit_module(model, AutoNormal(model), (x, y), optimizer=torch.optim.Adam, epochs=1, batch_size=8,
                   data_plate="rows", progress=False)  # fmt: skip
    with pytest.raises(TypeError, match=r"must return a torch\.optim\.Optimizer"):
        fit_module(model, AutoNormal(model), (x, y), optimizer=lambda params: None, epochs=1, batch_size=8,
                   progress=False)  # fmt: skip


def test_fit_module_matches_fit_on_a_deterministic_objective(pyro_state):
    """Full batch, the torch-optimizer route and :func:`fit` (Pyro's per-param Adam) take the same steps."""
    from pyro_bdl.inference import fit

    x, y = regression_data()
    model = Regression()
    guide = AutoDelta(model)
    fit(model, guide, (x, y), optim=pyro.optim.Adam({"lr": 0.05}), epochs=60, batch_size=NUM_DATA, progress=False)
    via_fit = guide.median()["w"].detach().clone()
    pyro.clear_param_store()
    model = Regression()
    guide = AutoDelta(model)
    fit_module(model, guide, (x, y), optimizer=functools.partial(torch.optim.Adam, lr=0.05), epochs=60,
               batch_size=NUM_DATA, progress=False)  # fmt: skip
    torch.testing.assert_close(guide.median()["w"].detach(), via_fit, atol=DETERMINISTIC_ATOL, rtol=0)
