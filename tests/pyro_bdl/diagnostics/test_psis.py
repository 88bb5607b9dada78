"""PSIS k-hat of guides whose distance from the exact posterior is known.

For a Gaussian target with scale ``sigma_p`` and a Gaussian proposal with the same mean and
scale ``r * sigma_p``, the importance weights have a Pareto tail with shape
``k = 1 - r^2`` when ``r < 1`` (their tail index is ``1 / (1 - r^2)``), and are bounded
(``k < 0``) when ``r > 1``. At ``r = 1`` they are constant.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyro_bdl.diagnostics import MIN_SAMPLES, PSISDiagnostic, importance_khat, psis_khat
from tests.pyro_bdl.diagnostics.conjugate import (
    NOISE,
    normal_guide,
    normal_model,
    regression_data,
    regression_guide,
    regression_model,
)

pytestmark = pytest.mark.usefixtures("pyro_state")


@pytest.fixture
def normal_data():
    return torch.randn(30) * math.sqrt(1 + NOISE**2)


def test_exact_amortised_guide_has_small_khat_per_datum(normal_data):
    result = importance_khat(normal_model, normal_guide(1.0), normal_data, num_samples=1000)
    assert result.per_datum and result.khat.shape == (30,)
    assert result.max_khat < PSISDiagnostic.GOOD
    assert result.reliable


def test_slightly_wide_amortised_guide_has_small_khat(normal_data):
    result = importance_khat(normal_model, normal_guide(1.3), normal_data, num_samples=1000)
    assert result.max_khat < PSISDiagnostic.GOOD
    assert result.counts()["good"] == 30


def test_far_too_narrow_amortised_guide_has_large_khat_near_the_known_value(normal_data):
    width = 0.2
    result = importance_khat(normal_model, normal_guide(width), normal_data, num_samples=2000)
    assert not result.reliable
    assert np.mean(result.khat > PSISDiagnostic.BAD) >= 0.8
    assert abs(result.khat.mean() - (1 - width**2)) < 0.15
    counts = result.counts()
    assert sum(counts.values()) == 30 and counts["bad"] + counts["very bad"] >= 24


def test_exact_full_covariance_guide_has_small_joint_khat():
    x, y = regression_data(20, 2)
    result = importance_khat(regression_model, regression_guide(x, y, 1.0), x, y, num_samples=1000)
    assert not result.per_datum and result.khat.shape == ()
    assert result.max_khat < PSISDiagnostic.GOOD


def test_far_too_narrow_full_covariance_guide_has_large_joint_khat():
    x, y = regression_data(20, 2)
    result = importance_khat(regression_model, regression_guide(x, y, 0.1), x, y, num_samples=2000)
    assert result.max_khat > PSISDiagnostic.BAD


def test_per_datum_on_a_model_with_global_latents_is_an_error():
    x, y = regression_data(20, 2)
    with pytest.raises(ValueError, match="site 'w' is not in the data plate 'data'"):
        importance_khat(regression_model, regression_guide(x, y), x, y, num_samples=MIN_SAMPLES, per_datum=True)


def test_joint_khat_of_an_amortised_guide_is_one_number(normal_data):
    result = importance_khat(normal_model, normal_guide(1.0), normal_data, num_samples=1000, per_datum=False)
    assert not result.per_datum and result.khat.shape == ()
    assert result.max_khat < PSISDiagnostic.GOOD


def test_psis_khat_of_synthetic_gaussian_ratios_has_the_known_shape():
    """Proposal N(0, 0.5^2), target N(0, 1): r = 0.5, so k = 1 - r^2 = 0.75."""
    generator = np.random.default_rng(0)
    z = 0.5 * generator.standard_normal((4, 4000))  # proposal sd 0.5, target sd 1
    log_w = -0.5 * z**2 + 0.5 * (z / 0.5) ** 2
    result = psis_khat(log_w.T)
    assert result.khat.shape == (4,)
    assert abs(result.khat.mean() - 0.75) < 0.15


def test_constant_log_weights_are_exact():
    result = psis_khat(torch.full((200,), -3.25))
    assert result.max_khat == -math.inf and result.reliable
    assert "exact" in result.summary()


def test_summary_and_worst_read_well(normal_data):
    result = importance_khat(normal_model, normal_guide(0.2), normal_data, num_samples=1000)
    text = str(result)
    assert "per data point, N=30, S=1000 draws" in text and "verdict: bad" in text
    worst = result.worst(3)
    assert [k for _, k in worst] == sorted(result.khat, reverse=True)[:3]
    assert text.count("\n") >= 5
    joint = psis_khat(0.3 * np.random.default_rng(1).standard_normal(500))  # light-tailed (log-normal) weights
    assert "joint over all latents" in joint.summary() and "verdict: good" in joint.summary()
    assert joint.sample_size_threshold == pytest.approx(1 - 1 / math.log10(500))
    with pytest.raises(ValueError, match="worst\\(\\) needs per-datum"):
        joint.worst()


@pytest.mark.parametrize(
    ("log_weights", "message"),
    [
        (np.zeros((3, 200, 2)), r"must be \(draws,\) or \(draws, data\)"),
        (np.zeros(MIN_SAMPLES - 1), f"at least {MIN_SAMPLES} draws"),
        (np.r_[np.zeros(199), np.nan], "NaN or \\+inf"),
        (np.r_[np.zeros(199), np.inf], "NaN or \\+inf"),
        (np.full(200, -np.inf), "every weight is zero"),
        (np.zeros(200, dtype=int), "floating point"),
    ],
)
def test_bad_log_weights_are_errors(log_weights, message):
    with pytest.raises(ValueError, match=message):
        psis_khat(log_weights)


def test_too_few_draws_is_an_error_before_any_work(normal_data):
    with pytest.raises(ValueError, match=f"num_samples must be an int >= {MIN_SAMPLES}"):
        importance_khat(normal_model, normal_guide(), normal_data, num_samples=10)


def test_no_function_shares_pyros_psis_diagnostic_name():
    """Pyro's psis_diagnostic(model, guide, *args) returns one float; ours is importance_khat, returning a
    PSISDiagnostic, and no alias under Pyro's name remains."""
    import pyro_bdl.diagnostics as diagnostics

    assert not hasattr(diagnostics, "psis_diagnostic")
    assert "psis_diagnostic" not in diagnostics.__all__
