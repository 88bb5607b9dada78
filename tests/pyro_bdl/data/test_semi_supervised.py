"""Class-balanced labelled subsets for semi-supervised training."""

import pytest
import torch

from pyro_bdl.data.semi_supervised import UNLABELLED, balanced_labelled_subset, hide_labels, select_classes


def test_subset_is_balanced_reproducible_and_hides_the_rest():
    labels = torch.arange(100) % 4
    keep = balanced_labelled_subset(labels, 8, 4, seed=3)
    assert torch.equal(torch.bincount(labels[keep], minlength=4), torch.full((4,), 2))
    assert torch.equal(keep, balanced_labelled_subset(labels, 8, 4, seed=3))
    assert not torch.equal(keep, balanced_labelled_subset(labels, 8, 4, seed=4))
    partial = hide_labels(labels, keep)
    assert int((partial != UNLABELLED).sum()) == 8
    assert torch.equal(partial[keep], labels[keep])


@pytest.mark.parametrize(
    ("num_labelled", "match"),
    [(10, "multiple of num_classes=4"), (2, "num_labelled must be an int >= 4"), (200, "class 0 has 25 rows")],
)
def test_bad_requests_are_refused(num_labelled, match):
    with pytest.raises(ValueError, match=match):
        balanced_labelled_subset(torch.arange(100) % 4, num_labelled, 4, seed=0)


def test_select_classes_keeps_the_chosen_classes_in_order_and_renumbers_them():
    labels = torch.tensor([3, 0, 8, 5, 3, 1, 8])
    rows, relabelled = select_classes(labels, [8, 3])
    assert rows.tolist() == [0, 2, 4, 6]
    assert relabelled.tolist() == [1, 0, 1, 0]
    assert relabelled.dtype == torch.long
    rows, relabelled = select_classes(labels.to(torch.uint8), (7,))  # a class with no rows: nothing kept
    assert rows.tolist() == [] and relabelled.tolist() == []


@pytest.mark.parametrize(
    ("labels", "classes", "match"),
    [(torch.arange(4), [], "non-empty sequence of distinct"), (torch.arange(4), [1, 1], "distinct class indices"),
     (torch.arange(4), [-1], "classes must be an int >= 0"), (torch.arange(4.0), [1], "1-D integer tensor")],
)  # fmt: skip
def test_select_classes_refuses_bad_requests(labels, classes, match):
    with pytest.raises(ValueError, match=match):
        select_classes(labels, classes)
