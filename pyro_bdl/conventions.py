"""The site and call conventions every model of the package follows (defined here, once).

Sites
    Every model draws its per-datum variables inside one plate named :data:`DATA_PLATE`
    (``dim=-1`` unless a model needs event batch dims to its right, documented then) and
    observes its likelihood at the site :data:`OBS_SITE`. Global latents (weights, loadings)
    sit outside the plate. :func:`pyro_bdl.inference.fit` scales exactly the sites inside
    :data:`DATA_PLATE` by ``N / B`` when it minibatches, as a subsampled plate would.
    Models with a partly observed label (M2) observe it at :data:`LABEL_SITE`.

Call shape (model and guide take the same arguments)
    ``model(x, y=None, *, obs_mask=None, num_data=None)``

    - ``x``: the data rows, ``(data, ...)``: the inputs of a conditional model (GLM, BNN),
      the observations themselves of a generative one (DLGM, BXPCA, RBM), the images of M2.
      Generative models accept ``x=None`` together with ``num_data`` to sample that many rows.
    - ``y``: targets or labels ``(data,)`` of conditional and semi-supervised models;
      ``None`` samples them. Generative models have no ``y``.
    - ``obs_mask``: boolean, the shape of what :data:`OBS_SITE` observes; ``False`` marks an
      entry as missing (its value is ignored, NaN allowed).
    - ``num_data``: rows to draw when nothing is observed.

Argument names used for the same thing everywhere
    ``num_classes`` (categories of a categorical or ordinal observation or label),
    ``data_dim`` (features of a generative model's rows), ``observation`` (a name from the GLM
    table), ``observation_params`` (a dict of the observation model's parameters), ``prior`` (a prior object) or
    ``prior_scale`` (the standard deviation of a Normal prior): a model or layer whose prior
    can be any :class:`~pyro_bdl.layers.Prior` takes ``prior``, one whose priors are always
    zero-mean Normals (GLM, BXPCA, MC dropout) takes ``prior_scale``; ``learn_params`` (fit the
    observation model's parameters), ``num_samples`` (posterior or importance draws),
    ``particle_chunk`` / ``data_chunk`` (how many draws / rows are evaluated at once).
"""

from __future__ import annotations

DATA_PLATE = "data"
"""Name of the plate over data rows in every model and guide."""

OBS_SITE = "obs"
"""Name of the observed likelihood site in every model."""

LABEL_SITE = "y"
"""Name of the (partly) observed label site of semi-supervised models."""

__all__ = ["DATA_PLATE", "LABEL_SITE", "OBS_SITE"]
