"""The SSG loss of spec step 6 on a hand-built batch, and the joint batches of SSG++."""
import pytest
import torch

from reid.loss import TripletLoss
from reid.models import ReIDOutput
from reid.trainers import JointBatches, part_triplet_terms
from reid.utils.errors import UserError


def test_ssg_loss_sums_the_four_terms_with_each_types_own_labels():
    blocks = torch.tensor([0.0] * 4 + [10.0] * 4)[:, None]  # two global clusters, far apart
    same = torch.zeros(8, 1)  # every image at the same point
    output = ReIDOutput(pooled=torch.stack([same, same, blocks], dim=1), embedding=blocks, logits=None)
    labels = torch.tensor([[0, 0, 0]] * 4 + [[1, 0, 1]] * 4)  # (global, upper, lower)
    loss, precision = part_triplet_terms(TripletLoss(0.5, mining="block", num_instances=4), output, labels)
    # T(x2, g) = 0 and T(lower, lower) = 0 (negatives 10 away); T(upper, upper) has no negative -> 0;
    # T(global pool, g): every distance is 0, so each pair costs the margin.
    assert loss.item() == pytest.approx(0.5, abs=1e-5)
    assert precision.item() == pytest.approx(0.5)  # (1 + 0 + 0 + 1) / 4


def test_joint_batches_restart_the_labelled_loader():
    pairs = list(JointBatches([1, 2, 3, 4, 5], ["a", "b"]))
    assert pairs == [(1, "a"), (2, "b"), (3, "a"), (4, "b"), (5, "a")]
    assert len(JointBatches([1, 2, 3], ["a"])) == 3


def test_an_empty_labelled_loader_is_refused():
    with pytest.raises(UserError, match="fewer identities than a batch needs"):
        JointBatches([1, 2], [])
