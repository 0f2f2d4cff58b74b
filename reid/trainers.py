"""Training loops: one loop in :class:`BaseTrainer`, the losses of each stage in its subclasses.

Each stage's loss is described in docs/algorithm.md:

- :class:`SourceTrainer`: batch-hard triplet on the global pool + cross-entropy ("Source training").
- :class:`SSGTrainer`: the four block-mined triplet terms of self-similarity grouping (grouping step 6).
- :class:`SemiTrainer`: SSG's terms plus the terms of a labelled batch ("SSG++").
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sized

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from reid.loss import TripletLoss
from reid.models import ReIDOutput
from reid.utils.distributed import gather_batch, world_size
from reid.utils.errors import UserError
from reid.utils.runtime import Runtime, amp_dtype, to_device

Stats = dict[str, float]
# SSG++'s labelled loader takes this many images per identity whatever --num-instances is, as released.
LABELLED_INSTANCES = 4
BatchStats = dict[str, torch.Tensor]


class BaseTrainer:
    """Runs one epoch: forward, loss, backward, step; mixed precision on CUDA when ``amp``.

    Subclasses implement :meth:`loss` for one batch and return ``(loss, stats)``, the stats as detached
    0-d tensors. They stay on the device and are read every ``print_freq`` batches and at the end of the
    epoch: reading a value waits for the GPU, and a wait at every batch leaves it idle while the next
    batch's kernels are launched. A non-finite loss is therefore caught at the next read, up to
    ``print_freq - 1`` steps late; the run stops there and the checkpoints on disk are untouched.
    """

    def __init__(self, model: nn.Module, runtime: Runtime, amp: bool = False, print_freq: int = 10):
        self.model = model
        self.runtime = runtime
        self.print_freq = print_freq
        self.amp_dtype = amp_dtype(runtime.device) if amp else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def train(self, epoch: int, batches: Iterable, optimizer: torch.optim.Optimizer) -> Stats:
        self.model.train()
        totals: Stats = {}
        unread: list[torch.Tensor] = []  # one row per batch since the last read: the loss, then the stats
        num_batches = len(batches) if isinstance(batches, Sized) else 0
        start = time.time()
        progress = tqdm(batches, total=num_batches or None, desc=f"epoch {epoch}", leave=False,
                        disable=not self.runtime.is_main or None)
        index = 0
        for index, batch in enumerate(progress, 1):
            with torch.autocast(self.runtime.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                loss, stats = self.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
            unread.append(torch.stack([loss.detach(), *stats.values()]).float())
            if index % self.print_freq and index != num_batches:
                continue
            _add_rows(totals, ["loss", *stats], unread, epoch, index)
            unread = []
            averages = "  ".join(f"{k} {v / index:.3f}" for k, v in totals.items())
            progress.set_postfix_str(averages, refresh=False)
            # Without a terminal (logs, CI) the bar is off: print a line now and then instead.
            if self.runtime.is_main and (index == num_batches or progress.disable):
                print(f"epoch {epoch} [{index}/{num_batches}]  {averages}  {time.time() - start:.1f}s")
        if unread:
            _add_rows(totals, ["loss", *stats], unread, epoch, index)
        count = max(1, num_batches or index)
        return {name: value / count for name, value in totals.items()}

    def loss(self, batch) -> tuple[torch.Tensor, BatchStats]:
        raise NotImplementedError

    def _forward(self, batch):
        """The model's output and the labels, gathered over DDP ranks so that every rank computes the loss on
        the whole global batch (negatives are mined across it)."""
        images, _, labels, *_ = batch
        output = self.model(to_device(images, self.runtime))
        return gather_output(output, labels.to(self.runtime.device, non_blocking=True))


def gather_output(output: ReIDOutput, labels: torch.Tensor) -> tuple[ReIDOutput, torch.Tensor]:
    """Gather a model output and its labels over the ranks, the features keeping their gradient
    (:func:`reid.utils.distributed.gather_batch`).

    Parameters
    ----------
    output : ReIDOutput
        This rank's pooled features, embedding and logits (or None).
    labels : torch.Tensor
        (B_local,) or (B_local, S+1) labels of this rank's images; gathered without gradient.

    Returns
    -------
    tuple
        The output of the global batch (every field gathered, ``logits`` kept None) and its labels.
    """
    if world_size() == 1:
        return output, labels
    gathered = output._replace(
        pooled=gather_batch(output.pooled),
        embedding=gather_batch(output.embedding),
        logits=None if output.logits is None else gather_batch(output.logits),
    )
    labels = labels.contiguous()
    shards = [torch.empty_like(labels) for _ in range(dist.get_world_size())]
    dist.all_gather(shards, labels)
    return gathered, torch.cat(shards)


class SourceTrainer(BaseTrainer):
    """Supervised source training: batch-hard triplet on the global pool plus cross-entropy on the logits."""

    def __init__(self, model: nn.Module, runtime: Runtime, margin: float = 0.5, **kwargs):
        super().__init__(model, runtime, **kwargs)
        self.triplet = TripletLoss(margin, mining="batch_hard")
        self.cross_entropy = nn.CrossEntropyLoss()

    def loss(self, batch) -> tuple[torch.Tensor, BatchStats]:
        output, pids = self._forward(batch)
        triplet, precision = self.triplet(output.pooled[:, 0].float(), pids)
        cross_entropy = self.cross_entropy(output.logits.float(), pids)
        accuracy = (output.logits.argmax(1) == pids).float().mean()
        return triplet + cross_entropy, {"triplet": triplet.detach(), "ce": cross_entropy.detach(),
                                         "prec": precision, "acc": accuracy}


def part_triplet_terms(triplet: TripletLoss, output, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``T(x2, l_0) + sum_f T(pool_f, l_f)`` over the S+1 pooled feature types; ``labels`` is (B, S+1), or
    (B,) when every type shares one label. Returns the sum and the mean precision."""
    if labels.dim() == 1:
        labels = labels.unsqueeze(1).expand(-1, output.pooled.shape[1])
    terms = [triplet(output.embedding.float(), labels[:, 0])]
    terms += [triplet(output.pooled[:, t].float(), labels[:, t]) for t in range(output.pooled.shape[1])]
    losses, precisions = zip(*terms)
    return sum(losses), torch.stack(precisions).mean()


class SSGTrainer(BaseTrainer):
    """Self-similarity grouping: ``T(x2, g) + T(pool_global, g) + sum_s T(pool_s, label_s)`` with the block
    miner (positives inside a global-cluster block, negatives by each type's own label)."""

    def __init__(self, model: nn.Module, runtime: Runtime, margin: float = 0.5, num_instances: int = 4,
                 **kwargs):
        super().__init__(model, runtime, **kwargs)
        self.triplet = TripletLoss(margin, mining="block", num_instances=num_instances)

    def loss(self, batch) -> tuple[torch.Tensor, BatchStats]:
        output, labels = self._forward(batch)
        loss, precision = part_triplet_terms(self.triplet, output, labels)
        return loss, {"prec": precision}


class SemiTrainer(SSGTrainer):
    """SSG++: the SSG loss on a cluster batch plus ``T(x2, y) + sum_f T(pool_f, y)`` on a labelled batch.

    :meth:`train` takes :class:`JointBatches` of the two loaders. A labelled batch is made of blocks of
    :data:`LABELLED_INSTANCES` images of one identity, whatever ``num_instances`` says of the cluster batches:
    blocks of ``num_instances`` there would mix two identities in one block.
    """

    def __init__(self, model: nn.Module, runtime: Runtime, margin: float = 0.5, num_instances: int = 4,
                 **kwargs):
        super().__init__(model, runtime, margin, num_instances, **kwargs)
        self.labelled_triplet = TripletLoss(margin, mining="block", num_instances=LABELLED_INSTANCES)

    def loss(self, batch) -> tuple[torch.Tensor, BatchStats]:
        cluster_batch, labelled_batch = batch
        cluster_loss, stats = super().loss(cluster_batch)
        output, labels = self._forward(labelled_batch)
        labelled_loss, precision = part_triplet_terms(self.labelled_triplet, output, labels)
        return cluster_loss + labelled_loss, {"prec": stats["prec"], "labelled_prec": precision}


def _add_rows(totals: Stats, names: list[str], rows: list[torch.Tensor], epoch: int, last_index: int) -> None:
    """Read the rows of the batches up to ``last_index`` (one wait for the device) into ``totals``; stop at
    the first batch whose loss is not finite."""
    values = torch.stack(rows).cpu()
    bad = torch.nonzero(~torch.isfinite(values[:, 0])).flatten().tolist()
    if bad:
        batch = last_index - len(rows) + 1 + bad[0]
        raise UserError(f"the loss became {values[bad[0], 0].item()} at epoch {epoch} batch {batch}; stopped, the "
                        "last checkpoint is kept (try a lower --lr)")
    for name, total in zip(names, values.double().sum(0).tolist()):
        totals[name] = totals.get(name, 0.0) + total


class JointBatches(Sized):
    """Pairs every batch of ``main`` with the next batch of ``other``, restarting ``other`` when exhausted."""

    def __init__(self, main: Sized, other: Sized):
        if len(other) == 0:
            raise UserError("the labelled set holds fewer identities than a batch needs; use a smaller --batch-size")
        self.main = main
        self.other = other

    def __len__(self) -> int:
        return len(self.main)

    def __iter__(self):
        return zip(self.main, itertools.chain.from_iterable(itertools.repeat(self.other)))
