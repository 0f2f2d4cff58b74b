"""Tests of the SSG triplet loss: hand-computed batches, a plain loop reference, degenerate batches."""

import itertools
import math

import pytest
import torch

from reid.loss import TripletLoss


def column(values):
    return torch.tensor(values, dtype=torch.float32).unsqueeze(1)


def reference_batch_hard(features, labels, margin):
    """Spec section 3, one anchor at a time in float64."""
    points = features.double().tolist()
    labels = labels.tolist()
    hinges, correct = [], []
    for anchor, anchor_label in enumerate(labels):
        positives = [math.dist(points[anchor], points[other]) for other, label in enumerate(labels)
                     if label == anchor_label and other != anchor]
        negatives = [math.dist(points[anchor], points[other]) for other, label in enumerate(labels)
                     if label != anchor_label]
        if not positives or not negatives:
            continue
        hinges.append(max(0.0, max(positives) - min(negatives) + margin))
        correct.append(min(negatives) > max(positives))
    return sum(hinges) / len(hinges), sum(correct) / len(correct)


def reference_blocks(features, labels, margin, num_instances):
    """Spec section 4 step 6, one ordered pair at a time in float64."""
    points = features.double().tolist()
    labels = labels.tolist()
    hinges, correct = [], []
    for start in range(0, len(labels), num_instances):
        for anchor, positive in itertools.combinations(range(start, start + num_instances), 2):
            negatives = [math.dist(points[anchor], points[other]) for other, label in enumerate(labels)
                         if label != labels[anchor]]
            if not negatives:
                continue
            positive_distance = math.dist(points[anchor], points[positive])
            hinges.append(max(0.0, positive_distance - min(negatives) + margin))
            correct.append(min(negatives) > positive_distance)
    return sum(hinges) / len(hinges), sum(correct) / len(correct)


def test_batch_hard_on_a_hand_computed_batch():
    # Points 0, 1, 3, 6 with labels a a b b, and a singleton c at 10 that is only ever a negative.
    # Anchor 0: d_ap 1, d_an 3 -> 0; anchor 1: 1 vs 2 -> 0; anchor 2: 3 vs 2 -> 1.5; anchor 3: 3 vs 4 -> 0.
    features = column([0.0, 1.0, 3.0, 6.0, 10.0])
    labels = torch.tensor([0, 0, 1, 1, 2])
    loss, precision = TripletLoss(margin=0.5, mining="batch_hard")(features, labels)
    assert loss.item() == pytest.approx(1.5 / 4, abs=1e-5)
    assert precision.item() == pytest.approx(3 / 4)


def test_batch_hard_on_a_hand_computed_2d_batch():
    # a (0,0), b (3,4), c (1,0) share a label; d (5,12), e (0,6) share another. With margin 2:
    # a: farthest positive b = 5, nearest negative e = 6                     -> 1, correct
    # b: positive a = 5, negative e = sqrt 13                                -> 7 - sqrt 13
    # c: positive b = sqrt 20, negative e = sqrt 37                          -> sqrt 20 - sqrt 37 + 2, correct
    # d: positive e = sqrt 61, negative b = sqrt 68                          -> sqrt 61 - sqrt 68 + 2, correct
    # e: positive d = sqrt 61, negative b = sqrt 13                          -> sqrt 61 - sqrt 13 + 2
    features = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [5.0, 12.0], [0.0, 6.0]])
    labels = torch.tensor([7, 7, 7, 9, 9])
    loss, precision = TripletLoss(margin=2.0, mining="batch_hard")(features, labels)
    root = math.sqrt
    hinges = [1.0, 7 - root(13), root(20) - root(37) + 2, root(61) - root(68) + 2, root(61) - root(13) + 2]
    assert loss.item() == pytest.approx(sum(hinges) / 5, abs=1e-5)
    assert precision.item() == pytest.approx(3 / 5)


def test_block_mining_on_a_hand_computed_batch():
    # Two blocks of 3: points 0, 1, 2.5 | 4, 5, 8.5 with stripe labels 0 0 1 | 2 2 2 (the first block's
    # stripe labels differ, so its pairs stay positive while point 2.5 is also a negative of 0 and 1).
    # Nearest negatives: anchor 0 -> 2.5, anchor 1 -> 1.5, anchor 3 -> 1.5, anchor 4 -> 2.5.
    # Pairs (d_ap, d_an): (1, 2.5) (2.5, 2.5) (1.5, 1.5) | (1, 1.5) (4.5, 1.5) (3.5, 2.5)
    # hinges 0, 0.5, 0.5, 0, 3.5, 1.5 -> mean 1; correct only (0, 1) and (3, 4).
    features = column([0.0, 1.0, 2.5, 4.0, 5.0, 8.5])
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    loss, precision = TripletLoss(margin=0.5, mining="block", num_instances=3)(features, labels)
    assert loss.item() == pytest.approx(1.0, abs=1e-5)
    assert precision.item() == pytest.approx(2 / 6)


def random_labels(pattern, generator, num_blocks, num_instances):
    size = num_blocks * num_instances
    if pattern == "global":
        return torch.arange(num_blocks).repeat_interleave(num_instances)
    if pattern == "stripe":
        # Block-wise cluster ids, with some members moved to another cluster as stripes do.
        labels = torch.arange(num_blocks).repeat_interleave(num_instances)
        moved = torch.rand(size, generator=generator) < 0.3
        return torch.where(moved, torch.randint(0, num_blocks + 2, (size,), generator=generator), labels)
    return torch.randint(0, 3, (size,), generator=generator)


@pytest.mark.parametrize("num_blocks, num_instances", [(2, 2), (3, 4), (5, 3), (8, 4)])
@pytest.mark.parametrize("pattern", ["global", "stripe", "few"])
@pytest.mark.parametrize("mining", ["batch_hard", "block"])
def test_miners_match_the_loop_reference_on_random_batches(mining, num_blocks, num_instances, pattern):
    generator = torch.Generator().manual_seed(num_blocks * 100 + num_instances)
    labels = random_labels(pattern, generator, num_blocks, num_instances)
    if len(set(labels.tolist())) == 1:
        labels[0] = labels[0] + 1
    features = torch.randn(len(labels), 5, generator=generator)
    if mining == "batch_hard":
        expected_loss, expected_precision = reference_batch_hard(features, labels, 0.5)
    else:
        expected_loss, expected_precision = reference_blocks(features, labels, 0.5, num_instances)
    loss, precision = TripletLoss(0.5, mining, num_instances)(features, labels)
    assert loss.item() == pytest.approx(expected_loss, abs=1e-4)
    assert precision.item() == pytest.approx(expected_precision)


@pytest.mark.parametrize("mining", ["batch_hard", "block"])
def test_a_batch_without_negatives_gives_a_zero_loss_in_the_graph(mining):
    features = torch.randn(8, 4, requires_grad=True)
    loss, precision = TripletLoss(mining=mining, num_instances=4)(features, torch.zeros(8, dtype=torch.long))
    assert loss.item() == 0.0 and precision.item() == 0.0
    loss.backward()
    assert torch.equal(features.grad, torch.zeros_like(features))


def test_batch_hard_with_only_singletons_gives_a_zero_loss():
    features = torch.randn(4, 3, requires_grad=True)
    loss, precision = TripletLoss(mining="batch_hard")(features, torch.arange(4))
    loss.backward()
    assert loss.item() == 0.0 and precision.item() == 0.0


@pytest.mark.parametrize("mining", ["batch_hard", "block"])
def test_gradients_are_finite_and_non_zero(mining):
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(12, 6, generator=generator)
    features[1] = features[0]  # a zero distance must not give NaN through the square root
    features.requires_grad_(True)
    labels = torch.arange(3).repeat_interleave(4)
    loss, _ = TripletLoss(margin=5.0, mining=mining, num_instances=4)(features, labels)
    loss.backward()
    assert loss.item() > 0
    assert torch.isfinite(features.grad).all()
    assert features.grad.abs().sum() > 0


def test_block_mining_needs_whole_blocks():
    with pytest.raises(ValueError, match="multiple of num_instances 4"):
        TripletLoss(mining="block", num_instances=4)(torch.randn(6, 3), torch.arange(6))


def test_unknown_miner_is_rejected():
    with pytest.raises(ValueError, match="batch_hard, block"):
        TripletLoss(mining="semi_hard")
