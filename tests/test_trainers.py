"""The SSG loss (docs/algorithm.md, grouping step 6) on a hand-built batch, and the joint batches of SSG++."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from reid import models, trainers
from reid.loss import TripletLoss
from reid.models import ReIDOutput, group_batchnorm
from reid.trainers import JointBatches, SemiTrainer, SSGTrainer, part_triplet_terms
from reid.utils.errors import UserError
from reid.utils.runtime import Runtime


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


class HostWaits(TorchDispatchMode):
    """Records the operators that make the host wait for a GPU: reading a value (``.item()``, ``bool()``) and
    selecting by a boolean mask, whose result size depends on the data."""

    def __init__(self):
        super().__init__()
        self.waits = []
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        waits = func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
                         torch.ops.aten.masked_select.default)
        if func is torch.ops.aten.index.Tensor:
            waits = any(index is not None and index.dtype == torch.bool for index in args[1])
        if waits and not self.paused:
            self.waits.append(str(func))
        return func(*args, **(kwargs or {}))


def test_an_ssg_epoch_reads_the_device_only_every_print_freq_batches(monkeypatch):
    torch.manual_seed(0)
    model = group_batchnorm(models.create("resnet18", num_split=2, num_features=64, pretrained=False), 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    labels = torch.tensor([[0, 0, 0], [0, 0, 0], [1, 2, 1], [1, 2, 1], [2, 1, 1], [2, 1, 1], [3, 3, 0], [3, 3, 0]])
    batches = [(torch.randn(8, 3, 64, 32), None, labels) for _ in range(6)]
    trainer = SSGTrainer(model, Runtime(torch.device("cpu")), num_instances=2, print_freq=3)
    mode = HostWaits()
    reads = []

    def add_rows(*args):  # the trainer's reads of the unread stats: one wait each, counted here
        reads.append(len(args[2]))
        mode.paused = True
        try:
            trainer_add_rows(*args)
        finally:
            mode.paused = False

    trainer_add_rows = trainers._add_rows
    monkeypatch.setattr(trainers, "_add_rows", add_rows)
    with mode:
        stats = trainer.train(0, batches, optimizer)
    assert mode.waits == []  # forward with BatchNorm over groups, four triplet terms, backward, SGD step
    assert reads == [3, 3]
    assert stats["loss"] > 0 and 0 <= stats["prec"] <= 1


class Points(torch.nn.Module):
    """A model whose every feature type is the input image itself, flattened: hand-placed points."""

    def forward(self, images):
        points = images.flatten(1)
        return ReIDOutput(pooled=points[:, None].expand(-1, 3, -1), embedding=points, logits=None)


def test_ssgpp_mines_the_labelled_batch_in_blocks_of_four_whatever_num_instances():
    """Cluster batches of 2 clusters x 8 images, labelled batches of 4 identities x 4: identities 10 apart, a
    block of 8 there would take two identities for positives and cost about 10 per pair."""
    def batch(labels):
        points = labels.float()[:, None, None, None].expand(-1, 2, 1, 1) * 10
        return points, None, labels

    cluster = batch(torch.arange(2).repeat_interleave(8))
    cluster = (*cluster[:2], cluster[2][:, None].expand(-1, 3))
    labelled = batch(torch.tensor([7, 3, 5, 1]).repeat_interleave(4))
    trainer = SemiTrainer(Points(), Runtime(torch.device("cpu")), margin=0.5, num_instances=8)
    loss, stats = trainer.loss((cluster, labelled))
    assert loss.item() == 0 and stats["labelled_prec"].item() == 1 and stats["prec"].item() == 1


def test_joint_batches_restart_the_labelled_loader():
    pairs = list(JointBatches([1, 2, 3, 4, 5], ["a", "b"]))
    assert pairs == [(1, "a"), (2, "b"), (3, "a"), (4, "b"), (5, "a")]
    assert len(JointBatches([1, 2, 3], ["a"])) == 3


def test_an_empty_labelled_loader_is_refused():
    with pytest.raises(UserError, match="fewer identities than a batch needs"):
        JointBatches([1, 2], [])
