"""NUTS for small BNNs: the gold standard the variational guides are compared with.

A thin wrapper of ``pyro.infer.MCMC(NUTS(model))`` (Hoffman & Gelman 2014) that starts the
chain at the deterministic network's initialisation (random symmetric-breaking values, unlike
the prior median 0) and seeds Pyro. Cost grows with the number of weights and data points;
use it for networks of up to a few hundred weights.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
from pyro.infer import MCMC, NUTS
from torch import nn

from pyro_bdl.bnn.guides import init_to_deterministic
from pyro_bdl.validation import check_int


def run_nuts(model: nn.Module, *args, num_samples: int = 200, warmup_steps: int = 200, num_chains: int = 1,
             seed: int = 0, target_accept_prob: float = 0.8, max_tree_depth: int = 10,
             init_strategy: Callable | None = None, progress: bool = False, **kwargs) -> MCMC:  # fmt: skip
    """Run NUTS on ``model(*args, **kwargs)`` and return the finished ``MCMC`` (``.get_samples()``).

    Args:
        model: a BNN model, e.g. ``BNNRegressor``; ``args``/``kwargs`` are its data, ``(x, y)``.
        num_samples: as for ``pyro.infer.MCMC``.
        warmup_steps: as for ``pyro.infer.MCMC``.
        num_chains: as for ``pyro.infer.MCMC``.
        seed: passed to ``pyro.set_rng_seed`` first.
        target_accept_prob: as for ``pyro.infer.NUTS``.
        max_tree_depth: as for ``pyro.infer.NUTS``.
        init_strategy: default :func:`~pyro_bdl.bnn.guides.init_to_deterministic`.
        progress: show MCMC's progress bar.
    """
    check_int("num_samples", num_samples)
    check_int("warmup_steps", warmup_steps, 0)
    check_int("num_chains", num_chains)
    if not 0.0 < target_accept_prob < 1.0:
        raise ValueError(f"target_accept_prob must lie in (0, 1), got {target_accept_prob!r}")
    pyro.set_rng_seed(seed)
    kernel = NUTS(
        model, init_strategy=init_strategy or init_to_deterministic(model),
        target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth,
    )  # fmt: skip
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, num_chains=num_chains,
                disable_progbar=not progress)  # fmt: skip
    mcmc.run(*args, **kwargs)
    return mcmc
