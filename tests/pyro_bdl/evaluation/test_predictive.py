"""Predictive summaries and metrics against hand computations and closed forms."""

import math

import pytest
import torch

from pyro_bdl.evaluation import (
    bald_decomposition,
    categorical_entropy,
    classification_error,
    classification_log_likelihood,
    expected_entropy,
    gaussian_mixture_log_likelihood,
    logits_log_likelihood,
    mean_probabilities,
    mutual_information,
    predictive_entropy,
    predictive_interval,
    predictive_mean_std,
    rmse,
)

LOG2 = math.log(2.0)


def normal_log_density(y: float, loc: float, scale: float) -> float:
    return -0.5 * math.log(2 * math.pi) - math.log(scale) - 0.5 * ((y - loc) / scale) ** 2


# --- regression ----------------------------------------------------------------------------


def test_mixture_mean_and_std_add_epistemic_and_aleatoric_variance():
    loc = torch.tensor([[0.0, 1.0], [2.0, 1.0]], dtype=torch.float64)  # (S=2, N=2)
    scale = torch.tensor([[1.0], [3.0]], dtype=torch.float64)  # (S, 1): one noise scale per draw
    mean, std = predictive_mean_std(loc, scale)
    # point 0: Var_s[mu] = 1, mean_s sigma^2 = (1 + 9) / 2 = 5; point 1: 0 + 5.
    torch.testing.assert_close(mean, torch.tensor([1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(std, torch.tensor([math.sqrt(6.0), math.sqrt(5.0)], dtype=torch.float64))


def test_mixture_std_without_scale_is_the_population_std_of_the_draws():
    samples = torch.tensor([[1.0], [3.0], [5.0]])
    mean, std = predictive_mean_std(samples)
    assert mean.item() == pytest.approx(3.0)
    assert std.item() == pytest.approx(math.sqrt(8.0 / 3.0))


def test_predictive_interval_takes_the_central_sample_quantiles():
    samples = torch.arange(101, dtype=torch.float64).unsqueeze(-1).expand(101, 3)  # 0, 1, ..., 100
    lower, upper = predictive_interval(samples, level=0.95)
    torch.testing.assert_close(lower, torch.full((3,), 2.5, dtype=torch.float64))
    torch.testing.assert_close(upper, torch.full((3,), 97.5, dtype=torch.float64))
    lower, upper = predictive_interval(samples, level=0.5)
    assert (lower[0].item(), upper[0].item()) == (25.0, 75.0)


def test_gaussian_mixture_log_likelihood_matches_the_closed_form():
    y = torch.tensor([1.0, -0.5], dtype=torch.float64)
    loc = torch.tensor([[0.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
    scale = torch.tensor([[1.0, 0.5], [2.0, 0.5]], dtype=torch.float64)
    expected = [
        math.log(0.5 * (math.exp(normal_log_density(1.0, 0.0, 1.0)) + math.exp(normal_log_density(1.0, 2.0, 2.0)))),
        math.log(0.5 * (math.exp(normal_log_density(-0.5, 0.0, 0.5)) + math.exp(normal_log_density(-0.5, 1.0, 0.5)))),
    ]
    result = gaussian_mixture_log_likelihood(y, loc, scale)
    torch.testing.assert_close(result, torch.tensor(expected, dtype=torch.float64))


def test_one_draw_is_the_gaussian_log_density_and_scalar_scale_broadcasts():
    y = torch.tensor([0.3, 2.0])
    loc = torch.tensor([[0.0, 1.0]])
    result = gaussian_mixture_log_likelihood(y, loc, torch.tensor(0.7))
    expected = [normal_log_density(0.3, 0.0, 0.7), normal_log_density(2.0, 1.0, 0.7)]
    torch.testing.assert_close(result, torch.tensor(expected))


def test_log_likelihood_in_original_units_shifts_by_log_of_the_target_scale():
    torch.manual_seed(0)
    loc, scale = torch.randn(5, 7, dtype=torch.float64), torch.rand(5, 7, dtype=torch.float64) + 0.5
    y = torch.randn(7, dtype=torch.float64)
    mean, std = 3.0, 4.0
    normalised = gaussian_mixture_log_likelihood(y, loc, scale)
    original = gaussian_mixture_log_likelihood(y * std + mean, loc * std + mean, scale * std)
    torch.testing.assert_close(original, normalised - math.log(std))


def test_log_likelihood_is_stable_far_from_every_component():
    # exp(-5000) underflows; a naive log(mean(exp(.))) would give -inf.
    result = gaussian_mixture_log_likelihood(torch.tensor([0.0]), torch.tensor([[100.0], [100.0]]), torch.tensor(1.0))
    assert result.item() == pytest.approx(normal_log_density(0.0, 100.0, 1.0), rel=1e-6)


def test_rmse_by_hand():
    assert rmse(torch.tensor([0.0, 0.0]), torch.tensor([3.0, 4.0])) == pytest.approx(math.sqrt(12.5))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: predictive_mean_std(torch.ones(3, 2), -torch.ones(3, 2)), "scale must be positive"),
        (lambda: predictive_mean_std(torch.ones(3, 2), torch.ones(2, 2)), "must broadcast"),
        (lambda: predictive_mean_std(torch.tensor([[float("nan")]])), "loc must be finite"),
        (lambda: predictive_mean_std(torch.ones(3, 2, dtype=torch.int64)), "floating"),
        (lambda: predictive_interval(torch.ones(4, 2), level=1.0), "level"),
        (lambda: gaussian_mixture_log_likelihood(torch.ones(3), torch.ones(4, 2), torch.tensor(1.0)), "y must have"),
        (lambda: rmse(torch.ones(3), torch.ones(2)), "prediction must have the shape"),
        (lambda: rmse([1.0], torch.ones(1)), "torch.Tensor"),
    ],
)
def test_bad_regression_inputs_are_refused(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


# --- classification ------------------------------------------------------------------------


def test_entropy_of_known_tables():
    probs = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    torch.testing.assert_close(categorical_entropy(probs), torch.tensor([math.log(4.0), 0.0, LOG2]))


def test_bald_splits_total_uncertainty_into_aleatoric_and_epistemic():
    h09 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    prob_samples = torch.tensor(
        [
            # point 0: confident draws that disagree -> all epistemic
            # point 1: identical uncertain draws     -> all aleatoric
            # point 2: draws 0.9/0.1 and 0.1/0.9      -> both
            [[1.0, 0.0], [0.5, 0.5], [0.9, 0.1]],
            [[0.0, 1.0], [0.5, 0.5], [0.1, 0.9]],
        ],
        dtype=torch.float64,
    )
    total, aleatoric, epistemic = bald_decomposition(prob_samples)
    torch.testing.assert_close(total, torch.tensor([LOG2, LOG2, LOG2], dtype=torch.float64))
    torch.testing.assert_close(aleatoric, torch.tensor([0.0, LOG2, h09], dtype=torch.float64))
    torch.testing.assert_close(epistemic, torch.tensor([LOG2, 0.0, LOG2 - h09], dtype=torch.float64))
    torch.testing.assert_close(predictive_entropy(prob_samples), total)
    torch.testing.assert_close(expected_entropy(prob_samples), aleatoric)
    torch.testing.assert_close(mutual_information(prob_samples), epistemic)
    torch.testing.assert_close(mean_probabilities(prob_samples)[2], torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_mutual_information_is_nonnegative_and_bounded_by_the_entropy():
    torch.manual_seed(0)
    prob_samples = torch.softmax(3 * torch.randn(20, 50, 10), dim=-1)
    total, aleatoric, epistemic = bald_decomposition(prob_samples)
    assert bool((epistemic >= 0).all()) and bool((epistemic <= total + 1e-6).all())
    torch.testing.assert_close(total, aleatoric + epistemic, atol=1e-5, rtol=0)


def test_classification_error_and_log_likelihood_by_hand():
    prob_samples = torch.tensor(
        [
            [[0.2, 0.8], [0.7, 0.3], [0.6, 0.4]],
            [[0.6, 0.4], [0.9, 0.1], [0.2, 0.8]],
        ],
        dtype=torch.float64,
    )
    labels = torch.tensor([1, 0, 1])
    # mean probabilities: [0.4, 0.6], [0.8, 0.2], [0.4, 0.6] -> argmax 1, 0, 1: no errors.
    assert classification_error(mean_probabilities(prob_samples), labels) == 0.0
    assert classification_error(mean_probabilities(prob_samples), torch.tensor([0, 0, 0])) == pytest.approx(2 / 3)
    expected = torch.tensor([math.log(0.6), math.log(0.8), math.log(0.6)], dtype=torch.float64)
    torch.testing.assert_close(classification_log_likelihood(prob_samples, labels), expected)


def test_a_label_every_draw_rules_out_scores_minus_infinity():
    prob_samples = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])
    assert classification_log_likelihood(prob_samples, torch.tensor([1])).item() == -math.inf


def test_log_likelihood_from_logits_matches_and_survives_underflow():
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 3, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    expected = classification_log_likelihood(logits.softmax(-1), labels)
    torch.testing.assert_close(logits_log_likelihood(logits, labels), expected)
    # float32 softmax of a 200-nat gap underflows to 0; the log-space value is -200 - log 1 exactly
    confident = torch.tensor([[[200.0, 0.0]]])
    assert classification_log_likelihood(confident.softmax(-1), torch.tensor([1])).item() == -math.inf
    assert logits_log_likelihood(confident, torch.tensor([1])).item() == pytest.approx(-200.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: logits_log_likelihood(torch.randn(2, 3), torch.tensor([0, 1])), "3 dimension"),
        (lambda: logits_log_likelihood(torch.tensor([[[float("inf"), 0.0]]]), torch.tensor([0])), "finite"),
        (lambda: predictive_entropy(torch.randn(2, 3, 4)), r"probabilities in \[0, 1\]|sum to 1"),
        (lambda: predictive_entropy(torch.full((2, 3, 4), 0.5)), "sum to 1"),
        (lambda: predictive_entropy(torch.full((3, 4), 0.25)), "3 dimension"),
        (lambda: predictive_entropy(torch.ones(2, 3, 1)), "at least 2 classes"),
        (lambda: classification_error(torch.full((3, 2), 0.5), torch.tensor([0, 1, 2])), r"\[0, 2\)"),
        (lambda: classification_error(torch.full((3, 2), 0.5), torch.tensor([0.0, 1.0, 1.0])), "integer"),
        (lambda: classification_error(torch.full((3, 2), 0.5), torch.tensor([0, 1])), r"shape \(3,\)"),
    ],
)
def test_bad_classification_inputs_are_refused(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()
