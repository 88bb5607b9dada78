"""Every model of the package against :mod:`pyro_bdl.conventions`, traced side by side.

Adding a model is one line in ``MODELS``: a name, a builder returning ``(model, guide)``, and
whether the model is conditional (``model(x, y)``) or generative (``model(x)``). An energy-based
model (the RBM) has no normalised likelihood to observe: its data enter through a factor
``-F(x)`` in the data plate, so its case names that factor site in place of :data:`OBS_SITE`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoNormal
from pyro.poutine.util import site_is_subsample
from torch import nn

from pyro_bdl.bnn import (
    BNNClassifier,
    BNNRegressor,
    MAPGuide,
    MCDropoutClassifier,
    MCDropoutRegressor,
    MeanFieldGuide,
    bayesianize,
)
from pyro_bdl.conventions import DATA_PLATE, OBS_SITE
from pyro_bdl.inference import scale_data_plate
from pyro_bdl.models import DLGM, M2, RBM, BXPCAModel, DLGMGuide, GLMModel, M2Guide, RBMGuide
from pyro_bdl.models.bayes_binary import BayesBinaryMLP, BernoulliMeanFieldGuide
from pyro_bdl.models.rbm import FACTOR_SITE

pytestmark = pytest.mark.usefixtures("pyro_state")

FEATURES, CLASSES = 4, 3


def _mlp(outputs: int, dropout: bool = False) -> nn.Sequential:
    layers = [nn.Linear(FEATURES, 8), nn.ReLU(), *([nn.Dropout(0.1)] if dropout else []), nn.Linear(8, outputs)]
    return nn.Sequential(*layers)


def _dlgm(latent_dims: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    model = DLGM(FEATURES, latent_dims, (8,))
    return model, DLGMGuide.for_model(model)


def _bayes_binary() -> tuple[nn.Module, nn.Module]:
    model = BNNClassifier(BayesBinaryMLP(FEATURES, 8, 1, CLASSES))
    return model, BernoulliMeanFieldGuide(model)


def _auto(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    return model, AutoNormal(model)


@dataclass(frozen=True)
class Case:
    """A model of the package: ``build()`` returns ``(model, guide)``; ``target`` is ``None`` for a
    generative model (``model(x)``), else ``"real"`` or ``"label"`` (the ``y`` of ``model(x, y)``);
    ``site`` is where the data enter: :data:`OBS_SITE`, or the factor of an energy-based model."""

    name: str
    build: Callable[[], tuple[nn.Module, nn.Module]]
    target: str | None
    site: str = OBS_SITE


MODELS = [
    Case("glm", lambda: _auto(GLMModel(FEATURES, "gaussian")), "real"),
    Case("glm_categorical", lambda: _auto(GLMModel(FEATURES, "categorical", num_classes=CLASSES)), "label"),
    Case("bxpca", lambda: _auto(BXPCAModel(FEATURES, 2)), None),
    Case("dlgm_1_layer", lambda: _dlgm((2,)), None),
    Case("dlgm_2_layers", lambda: _dlgm((3, 2)), None),
    Case("bnn_regressor", lambda: (m := BNNRegressor(bayesianize(_mlp(1))), MeanFieldGuide(m)), "real"),
    Case("bnn_classifier", lambda: (m := BNNClassifier(bayesianize(_mlp(CLASSES))), MeanFieldGuide(m)), "label"),
    Case("mc_dropout_regressor", lambda: (m := MCDropoutRegressor(_mlp(1, dropout=True)), MAPGuide(m)), "real"),
    Case("mc_dropout_classifier", lambda: (m := MCDropoutClassifier(_mlp(CLASSES, True)), MAPGuide(m)), "label"),
    Case("m2", lambda: (m := M2(FEATURES, CLASSES, 2, (8,)), M2Guide.for_model(m, alpha=1.0)), "label"),
    Case("rbm", lambda: (RBM(FEATURES, 3), RBMGuide()), None, FACTOR_SITE),
    Case("bayes_binary", lambda: _bayes_binary(), "label"),
]


def data(case: Case, rows: int) -> tuple[torch.Tensor, ...]:
    """The positional arguments of a call on ``rows`` data rows."""
    x = torch.bernoulli(torch.full((rows, FEATURES), 0.5))
    if case.target is None:
        return (x,)
    y = torch.randn(rows) if case.target == "real" else torch.randint(0, CLASSES, (rows,))
    return x, y


def traces(case: Case, rows: int) -> tuple[poutine.Trace, poutine.Trace]:
    """``(model_trace, guide_trace)`` of a fresh pair's call on ``rows`` rows, the model replayed on the guide."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, guide = case.build()
    args = data(case, rows)
    guide_trace = poutine.trace(guide).get_trace(*args)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    return model_trace, guide_trace


def per_datum_sites(trace: poutine.Trace, other: poutine.Trace) -> set[str]:
    """Sample sites whose shape changes with the number of rows (``trace`` and ``other`` differ in rows)."""
    return {
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and not site_is_subsample(site)
        and site["value"].shape != other.nodes[name]["value"].shape
    }


@pytest.fixture(params=MODELS, ids=lambda case: case.name)
def case(request) -> Case:
    return request.param


def test_the_observed_site_is_obs_inside_the_data_plate(case):
    model_trace, _ = traces(case, 5)
    site = model_trace.nodes[case.site]
    assert site["is_observed"]
    frames = {frame.name: frame for frame in site["cond_indep_stack"]}
    assert DATA_PLATE in frames and frames[DATA_PLATE].size == 5


def test_every_per_datum_site_sits_in_the_data_plate(case):
    (model_5, guide_5), (model_7, guide_7) = traces(case, 5), traces(case, 7)
    local = {"model": per_datum_sites(model_5, model_7), "guide": per_datum_sites(guide_5, guide_7)}
    assert case.site in local["model"]
    for which, trace in (("model", model_5), ("guide", guide_5)):
        for name in local[which]:
            plates = [frame.name for frame in trace.nodes[name]["cond_indep_stack"]]
            assert DATA_PLATE in plates, f"{case.name} {which} site {name!r} is per datum but sits in {plates}"


def test_fit_scaling_reaches_exactly_the_per_datum_sites(case):
    """``scale_data_plate`` (what ``fit`` uses to minibatch) scales every per-datum site and no global one."""
    local = per_datum_sites(traces(case, 5)[0], traces(case, 7)[0])
    model, _ = case.build()
    trace = poutine.trace(scale_data_plate(model, DATA_PLATE, 3.0)).get_trace(*data(case, 5))
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and not site_is_subsample(site):
            assert site["scale"] == (3.0 if name in local else 1.0), f"{case.name} site {name!r}"


def test_model_and_guide_follow_the_call_shape(case):
    model, guide = case.build()
    params = inspect.signature(model.forward).parameters
    names = list(params)
    expected = ["x", "obs_mask", "num_data"] if case.target is None else ["x", "y", "obs_mask", "num_data"]
    assert names == expected
    if case.target is not None:
        assert params["y"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and params["y"].default is None
    for name in ("obs_mask", "num_data"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY and params[name].default is None
    if not isinstance(guide, AutoNormal | MAPGuide):  # a hand-written guide: the model's arguments exactly
        assert inspect.signature(guide.forward).parameters == params
    # and every guide accepts the model's call, keywords included
    args = data(case, 5)
    guide(*args, num_data=5)
    model(*args, num_data=5)
    with pytest.raises(ValueError, match="num_data"):
        model(*args, num_data=4)


SYNONYMS = {"num_categories": "num_classes", "learn_observation_params": "learn_params", "features": "data_dim",
            "n_samples": "num_samples", "chunk_size": "particle_chunk / data_chunk"}  # fmt: skip


def test_constructors_use_the_one_set_of_argument_names(case):
    model, _ = case.build()
    for cls in type(model).__mro__:
        if cls.__module__.startswith("pyro_bdl.") and "__init__" in vars(cls):
            for name in inspect.signature(cls.__init__).parameters:
                assert name not in SYNONYMS, f"{cls.__name__}({name}=...): the package spells it {SYNONYMS[name]}"
            var_keyword = [p for p in inspect.signature(cls.__init__).parameters.values() if p.kind is p.VAR_KEYWORD]
            assert not var_keyword or cls.__name__.startswith("MCDropout"), f"{cls.__name__} takes **{var_keyword[0]}"


def test_bxpca_minibatch_scaling_is_unbiased():
    """BXPCA's z and obs share the data plate, so N / B-scaled batch log joints average to the full one
    over a partition of the rows (before, z sat in plate "rows" and obs in two other plates: nothing
    was scaled, and fit's minibatch ELBO under-weighted the likelihood by B / N)."""
    rows, batch = 12, 4
    model = BXPCAModel(FEATURES, 2, "bernoulli_logit")
    x = torch.bernoulli(torch.full((rows, FEATURES), 0.5))
    values = {"z": torch.randn(rows, 1, 2), "loadings": torch.randn(2, FEATURES), "offset": torch.randn(FEATURES)}
    full = poutine.trace(poutine.condition(model, values)).get_trace(x).log_prob_sum()
    scaled = []
    for start in range(0, rows, batch):
        index = slice(start, start + batch)
        batch_values = {**values, "z": values["z"][index]}
        fn = scale_data_plate(poutine.condition(model, batch_values), DATA_PLATE, rows / batch)
        scaled.append(poutine.trace(fn).get_trace(x[index]).log_prob_sum())
    torch.testing.assert_close(torch.stack(scaled).mean(), full)
