"""Held-out scores of a latent-variable model in one call: the test ELBO and the IW log-likelihood.

For test images ``x_n`` (N, D), in blocks of ``data_chunk`` rows with a progress bar:

* ELBO per image, ``(1/S) sum_s log w_n^(s)`` with ``S = elbo_samples``;
* importance-weighted log-likelihood ``log (1/K) sum_k w_n^(k)`` with ``K = iw_samples`` (Burda et al.
  2015), a lower bound on ``log p(x_n)`` that tightens as K grows; its negative mean is the test NLL.

``w = p(x, z) / q(z | x)`` from :mod:`pyro_bdl.inference.scoring`. The DLGM, DRAW and SBN examples
report these numbers through :func:`held_out_scores`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from pyro_bdl.inference.scoring import elbo_per_datum, importance_log_likelihood
from pyro_bdl.validation import check_int


def held_out_scores(
    model: Callable,
    guide: Callable,
    images: torch.Tensor,
    *,
    iw_samples: int,
    elbo_samples: int,
    particle_chunk: int,
    data_chunk: int,
    progress: bool = True,
) -> dict[str, float | int | None]:
    """Mean test ELBO and IW log-likelihood (nats per image) of ``images`` (N, D), with their run time.

    Args:
        model: the Pyro model, called as ``model(block)``.
        guide: its guide, called the same way.
        images: (N, D) held-out rows, already in the model's observation space (e.g. binarised).
        iw_samples: K, importance samples per image.
        elbo_samples: S, samples per image for the ELBO.
        particle_chunk: samples vectorised at once (capped at K).
        data_chunk: images scored at once.
        progress: show a progress bar over the blocks.

    Returns:
        ``test_images``, ``iw_samples``, ``test_elbo``, ``test_iw_log_likelihood``, ``test_nll`` (its
        negative) with ``test_nll_standard_error`` (over images; None for one image) and ``seconds``.
    """
    for name, value in (("iw_samples", iw_samples), ("elbo_samples", elbo_samples),
                        ("particle_chunk", particle_chunk), ("data_chunk", data_chunk)):  # fmt: skip
        check_int(name, value, minimum=1)
    if images.dim() != 2 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, D) tensor, got shape {tuple(images.shape)}")
    chunk = min(particle_chunk, iw_samples)
    elbo, iw = [], []
    started = time.perf_counter()
    for start in tqdm(range(0, len(images), data_chunk), desc=f"score k={iw_samples}", disable=not progress):
        block = images[start : start + data_chunk]
        elbo.append(elbo_per_datum(model, guide, block, num_samples=elbo_samples, particle_chunk=chunk))
        iw.append(importance_log_likelihood(model, guide, block, num_samples=iw_samples, particle_chunk=chunk))
    elbo_all, iw_all = torch.cat(elbo), torch.cat(iw)
    return {
        "test_images": len(images),
        "iw_samples": iw_samples,
        "test_elbo": elbo_all.mean().item(),
        "test_iw_log_likelihood": iw_all.mean().item(),
        "test_nll": -iw_all.mean().item(),
        "test_nll_standard_error": (iw_all.std() / math.sqrt(len(iw_all))).item() if len(iw_all) > 1 else None,
        "seconds": time.perf_counter() - started,
    }
