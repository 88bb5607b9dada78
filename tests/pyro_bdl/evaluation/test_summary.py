"""classification_scores: the usual held-out scores of posterior draws, in one call."""

import math

import pytest
import torch

from pyro_bdl.evaluation import classification_scores


def test_scores_of_two_draws_by_hand():
    # 2 draws, 3 points, 2 classes; the predictive is the mean of the draws' probabilities
    probs = torch.tensor([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [[0.7, 0.3], [0.4, 0.6], [0.2, 0.8]]])
    labels = torch.tensor([0, 1, 0])
    scores = classification_scores(probs.log(), labels)
    mean = probs.mean(0)  # [[0.8, 0.2], [0.3, 0.7], [0.4, 0.6]]: the third point is wrong
    assert scores["error"] == pytest.approx(1 / 3)
    expected_ll = (math.log(0.8) + math.log(0.7) + math.log(0.4)) / 3
    assert scores["log_likelihood"] == pytest.approx(expected_ll, abs=1e-6)
    entropy = -(mean * mean.log()).sum(-1)
    assert scores["entropy_correct"] == pytest.approx(float(entropy[:2].mean()), abs=1e-6)
    assert scores["entropy_wrong"] == pytest.approx(float(entropy[2]), abs=1e-6)
    assert 0 <= scores["ece"] <= 1


def test_no_wrong_answers_gives_none_for_their_entropy():
    logits = torch.tensor([[[5.0, -5.0], [-5.0, 5.0]]])
    scores = classification_scores(logits, torch.tensor([0, 1]))
    assert scores["error"] == 0.0 and scores["entropy_wrong"] is None
