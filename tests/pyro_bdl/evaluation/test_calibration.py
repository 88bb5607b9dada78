"""Expected calibration error and interval coverage on constructed cases."""

import pytest
import torch

from pyro_bdl.evaluation import expected_calibration_error, interval_coverage, reliability_bins


def binary(confidence: float, count: int) -> torch.Tensor:
    return torch.tensor([[confidence, 1.0 - confidence]] * count, dtype=torch.float64)


def test_ece_on_a_constructed_case():
    # 4 predictions at confidence 0.9 with 3 right, 4 at 0.65 with 2 right (class 0 predicted).
    probs = torch.cat([binary(0.9, 4), binary(0.65, 4)])
    labels = torch.tensor([0, 0, 0, 1, 0, 0, 1, 1])
    expected = 0.5 * abs(0.75 - 0.9) + 0.5 * abs(0.5 - 0.65)
    assert expected_calibration_error(probs, labels, num_bins=10) == pytest.approx(expected)
    bins = reliability_bins(probs, labels, num_bins=10)
    assert bins.counts.tolist() == [0, 0, 0, 0, 0, 0, 4, 0, 4, 0]  # 0.65 in (0.6, 0.7], 0.9 in (0.8, 0.9]
    assert bins.accuracy[6].item() == pytest.approx(0.5) and bins.accuracy[8].item() == pytest.approx(0.75)
    assert bins.confidence[8].item() == pytest.approx(0.9)
    assert torch.isnan(bins.accuracy[0]) and torch.isnan(bins.confidence[9])
    torch.testing.assert_close(bins.edges, torch.linspace(0, 1, 11, dtype=torch.float64))


def test_bins_are_closed_on_the_right():
    bins = reliability_bins(binary(0.5, 2), torch.tensor([0, 1]), num_bins=10)
    assert bins.counts[4].item() == 2  # 0.5 lies in (0.4, 0.5]
    bins = reliability_bins(binary(1.0, 1), torch.tensor([0]), num_bins=10)
    assert bins.counts[9].item() == 1


def test_calibrated_predictions_score_zero_and_confidently_wrong_ones_score_one():
    probs = torch.cat([binary(0.75, 4), binary(1.0, 3)])
    assert expected_calibration_error(probs, torch.tensor([0, 0, 0, 1, 0, 0, 0])) == pytest.approx(0.0)
    assert expected_calibration_error(binary(1.0, 5), torch.ones(5, dtype=torch.int64)) == pytest.approx(1.0)


def test_ece_of_sampled_calibrated_labels_is_small():
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(2 * torch.randn(20000, 5, generator=generator), dim=-1)
    labels = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    assert expected_calibration_error(probs, labels) < 0.02
    overconfident = torch.softmax(torch.log(probs) * 3, dim=-1)  # same argmax, sharpened
    assert expected_calibration_error(overconfident, labels) > 0.1


def test_interval_coverage_by_hand():
    y = torch.tensor([0.0, 1.0, 2.0, 3.0])
    lower = torch.tensor([-1.0, 1.0, 2.5, 0.0])
    upper = torch.tensor([1.0, 2.0, 3.0, 2.9])
    assert interval_coverage(y, lower, upper) == pytest.approx(0.5)  # ends count as inside


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: reliability_bins(binary(0.9, 2), torch.tensor([0, 1]), num_bins=0), "num_bins"),
        (lambda: reliability_bins(binary(0.9, 2), torch.tensor([0, 1]), num_bins=2.5), "num_bins"),
        (lambda: expected_calibration_error(torch.ones(2, 2), torch.tensor([0, 1])), "sum to 1"),
        (lambda: interval_coverage(torch.zeros(2), torch.ones(2), torch.zeros(2)), "upper must be >= lower"),
        (lambda: interval_coverage(torch.zeros(2), torch.zeros(3), torch.ones(2)), "lower must have the shape"),
    ],
)
def test_bad_inputs_are_refused(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()
