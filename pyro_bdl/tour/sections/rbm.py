"""Tour section: a restricted Boltzmann machine trained by persistent contrastive divergence, scored by AIS.

``train_rbm`` runs PCD-1 through Pyro's SVI (``ContrastiveDivergence``); ``ais_log_partition``
estimates ``log Z`` by annealed importance sampling from the base-rate model (Salakhutdinov &
Murray 2008), giving the test log-likelihood ``mean(-F(v)) - log Z``. The base-rate model itself
(independent pixels at their training frequencies, whose ``log Z`` is exact) is the baseline.
"""

from __future__ import annotations

from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

from pyro_bdl.data import binarize_dynamic, to_float
from pyro_bdl.figures.rbm import filter_grid, gibbs_samples_grid
from pyro_bdl.inference import ais_log_partition, base_rate_bias
from pyro_bdl.models import RBM, train_rbm
from pyro_bdl.tour.core import Budget, Section
from pyro_bdl.tour.data import TourData

BATCH = 100


def run(data: TourData, out: Path, budget: Budget) -> Section:
    pyro.clear_param_store()
    pyro.set_rng_seed(budget.seed)
    train = binarize_dynamic(to_float(data.train.images, flatten=True), torch.Generator().manual_seed(budget.seed))
    test = binarize_dynamic(to_float(data.test.images, flatten=True), torch.Generator().manual_seed(budget.seed + 1))
    hidden, epochs = budget.pick(200, 50), budget.pick(30, 5)
    num_betas, num_runs = budget.pick(5000, 500), budget.pick(100, 32)
    base = base_rate_bias(train)
    rbm = RBM(784, hidden)
    with torch.no_grad():
        rbm.visible_bias.copy_(base.float())
    history = train_rbm(rbm, train, epochs=epochs, batch_size=BATCH, lr=0.05, momentum=0.5, weight_decay=2e-4, k=1,
                        persistent=True, seed=budget.seed)  # fmt: skip
    ais = ais_log_partition(rbm, num_betas=num_betas, num_runs=num_runs, base_bias=base,
                            generator=torch.Generator().manual_seed(budget.seed))  # fmt: skip
    with torch.no_grad():
        test_ll = float(rbm.log_likelihood(test, ais.log_z).double().mean())
        train_ll = float(rbm.log_likelihood(train, ais.log_z).double().mean())
        base_rate_ll = float(dist.Bernoulli(logits=base).log_prob(test.double()).sum(-1).mean())
    figures = [
        filter_grid(rbm, out / "filters.png"),
        gibbs_samples_grid(rbm, out / "samples.png", num_chains=10, rows=budget.pick(10, 3),
                           steps_between=budget.pick(200, 10)),
    ]  # fmt: skip
    numbers = {
        "hidden_units": hidden,
        "epochs": epochs,
        "ais_temperatures": num_betas,
        "ais_runs": num_runs,
        "log_z": ais.log_z,
        "log_z_standard_error": ais.stderr,
        "ais_effective_sample_size": ais.ess,
        "test_log_likelihood": test_ll,
        "train_log_likelihood": train_ll,
        "base_rate_test_log_likelihood": base_rate_ll,
        "final_cd_loss": float(history[-1]),
    }
    text = (
        f"An RBM with 784 binary visible and {hidden} hidden units, trained by PCD-1 (`train_rbm`: Pyro's SVI "
        f"with the `ContrastiveDivergence` loss, SGD lr 0.05, momentum 0.5, weight decay 2e-4, batches of {BATCH}) "
        f"for {epochs} epochs "
        f"on the 3,000 training digits, binarised once. `ais_log_partition` estimates log Z with {num_runs} AIS "
        f"runs over {num_betas} temperatures from the base-rate model; log Z's standard error (delta method) "
        f"and the effective sample size of the AIS weights say how far to trust it (an ESS near the number of "
        f"runs is good; a small one means log Z, hence the log-likelihood, is likely underestimated, i.e. the "
        f"log-likelihood overestimated). The test log-likelihood (nats per digit, 1,000 test digits) is set "
        f"against the base-rate model's, whose log Z is exact. Salakhutdinov & Murray (2008) report -86.34 "
        f"nats for a 500-unit CD-25 RBM trained long on all 60,000 digits."
    )
    return Section("Restricted Boltzmann machine (PCD, AIS)", numbers, figures, text)
