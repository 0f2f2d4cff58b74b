"""BatchNorm over groups of N images, the setting the SSG paper was trained in, on any number of GPUs.

The published SSG numbers come from DataParallel on 2 GPUs with a batch of 128: every BatchNorm layer computed
its statistics over each GPU's 64 images (SSG spec section 4). One GPU normalises over all 128 and synchronised
BatchNorm over the whole global batch, so neither reproduces the paper. :func:`group_batchnorm` makes every
BatchNorm layer compute its training statistics over consecutive groups of ``group_size`` images of the global
batch, whatever the number of GPUs or processes:

- a device or rank holding several groups normalises each one on its own (ghost BatchNorm,
  :class:`GroupBatchNorm`);
- a rank holding exactly one group is plain BatchNorm;
- ranks whose shares make up one group are synchronised over their own process group (``nn.SyncBatchNorm``
  on CUDA, :class:`reid.utils.distributed.DistributedBatchNorm` elsewhere).

Running statistics follow DataParallel on 2 GPUs. There the replica on the first GPU shares the module's
buffers and the other replicas' updates are dropped, so the running mean and variance are updated once per
forward pass, with BatchNorm's momentum, from the statistics of the first group of the batch alone (unbiased
variance over that group). :class:`GroupBatchNorm` does exactly that; under DistributedDataParallel, which
broadcasts rank 0's buffers before every forward pass, rank 0's first group plays that part.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from reid.utils.distributed import (
    batchnorm_like,
    check_batchnorm_input,
    convert_sync_batchnorm,
    replace_batchnorm,
    running_average_factor,
    world_size,
)
from reid.utils.errors import UserError


class GroupBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of consecutive groups of ``group_size`` images.

    In training mode a batch of ``k * group_size`` images is normalised as ``k`` separate batches; the running
    statistics are updated from the first group only, once per call (what DataParallel on 2 GPUs does, see the
    module docstring). In evaluation mode it is plain BatchNorm. Accepts (N, C), (N, C, L) and (N, C, H, W)
    inputs; parameters as ``nn.BatchNorm2d`` plus ``group_size``.
    """

    def __init__(self, *args, group_size: int, **kwargs):
        super().__init__(*args, **kwargs)
        if group_size < 1:
            raise ValueError(f"GroupBatchNorm: group_size must be >= 1, got {group_size}")
        self.group_size = group_size

    def _check_input_dim(self, input: Tensor) -> None:
        check_batchnorm_input(self, input)

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not self.training:
            return super().forward(input)
        if input.shape[0] % self.group_size:
            raise ValueError(f"GroupBatchNorm: a training batch of {input.shape[0]} cannot be split into groups "
                             f"of {self.group_size}")
        average_factor = running_average_factor(self)
        first, *others = input.split(self.group_size)
        outputs = [F.batch_norm(first, self.running_mean, self.running_var, self.weight, self.bias, True,
                                average_factor, self.eps)]
        outputs += [F.batch_norm(group, None, None, self.weight, self.bias, True, 0.0, self.eps) for group in others]
        return torch.cat(outputs) if others else outputs[0]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group_size={self.group_size}"


def group_batchnorm(model: nn.Module, group_size: int, rank_batch_size: int | None = None,
                    device_type: str = "cpu") -> nn.Module:
    """Make every ``BatchNorm1d``/``BatchNorm2d`` of ``model`` compute its training statistics over consecutive
    groups of ``group_size`` images of the global batch (see the module docstring).

    In training mode, the output on a batch of ``2 * group_size`` images equals the original model's outputs on
    each half run separately. The layers share the original parameters and buffers.

    Parameters
    ----------
    model : nn.Module
        The model, before it is wrapped by DataParallel or DistributedDataParallel.
    group_size : int
        Images per BatchNorm group; 0 leaves the model unchanged (one group per batch).
    rank_batch_size : int or None
        Under DistributedDataParallel, the images of a training batch on each rank. When it is smaller than
        ``group_size``, groups span ``group_size // rank_batch_size`` consecutive ranks, each group of ranks
        synchronised over its own process group (every rank must call this function, as for any collective).
    device_type : str
        Where the model trains; ``"cuda"`` uses ``nn.SyncBatchNorm`` for groups that span ranks.

    Returns
    -------
    nn.Module
        The converted model (``model`` itself, modified in place, unless it is a BatchNorm layer).
    """
    if group_size < 0:
        raise ValueError(f"group_batchnorm: group_size must be >= 0, got {group_size}")
    if group_size == 0:
        return model
    if rank_batch_size is None or rank_batch_size >= group_size or world_size() == 1:
        return replace_batchnorm(model, lambda layer: batchnorm_like(layer, GroupBatchNorm, group_size=group_size))
    return convert_sync_batchnorm(model, device_type, _rank_group(group_size // rank_batch_size))


def _rank_group(ranks_per_group: int) -> dist.ProcessGroup:
    """This rank's process group among consecutive groups of ``ranks_per_group`` ranks; every rank creates
    every group, as ``dist.new_group`` requires."""
    rank, ranks = dist.get_rank(), dist.get_world_size()
    mine = None
    for first in range(0, ranks, ranks_per_group):
        group = dist.new_group(list(range(first, first + ranks_per_group)))
        if first <= rank < first + ranks_per_group:
            mine = group
    return mine


def check_bn_group_size(group_size: int, batch_size: int, processes: int = 1, gpus: int = 1) -> None:
    """Raise UserError unless groups of ``group_size`` tile a global batch of ``batch_size`` split over
    ``processes`` DDP ranks, or over ``gpus`` GPUs by DataParallel (where a group cannot span GPUs)."""
    if group_size == 0:
        return
    fix = "give a --bn-group-size that divides it, or 0 for one group per batch"
    if group_size < 0:
        raise UserError(f"--bn-group-size {group_size}: expected a number of images >= 0")
    if batch_size % group_size:
        raise UserError(f"--bn-group-size {group_size} does not divide --batch-size {batch_size}; {fix}")
    if gpus > 1 and processes == 1:
        share = -(-batch_size // gpus)
        if share % group_size:
            raise UserError(f"--bn-group-size {group_size}: DataParallel gives each of {gpus} GPUs {share} images "
                            "and a BatchNorm group cannot span GPUs there; use torchrun (groups may span "
                            f"processes) or {fix}")
        return
    share = batch_size // processes
    if share % group_size and group_size % share:
        raise UserError(f"--bn-group-size {group_size}: each of {processes} processes holds {share} images of the "
                        f"batch, which neither splits into groups nor makes up a group; {fix}")
