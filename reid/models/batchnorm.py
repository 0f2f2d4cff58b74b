"""Every BatchNorm of this project: over groups of N images (the paper's setting) and over the global batch of
all ranks, on any number of GPUs or processes, and the helpers that convert a model's layers to them.

The published SSG numbers come from DataParallel on 2 GPUs with a batch of 128: every BatchNorm layer computed
its statistics over each GPU's 64 images (docs/algorithm.md, "BatchNorm groups and several GPUs"). One GPU
normalises over all 128 and synchronised BatchNorm over the whole global batch, so neither reproduces the paper.
:func:`group_batchnorm` makes every BatchNorm layer compute its training statistics over consecutive groups of
``group_size`` images of the global batch, whatever the number of GPUs or processes:

- a device or rank holding several groups normalises each one on its own (ghost BatchNorm,
  :class:`GroupBatchNorm`);
- a rank holding exactly one group is plain BatchNorm;
- ranks whose shares make up one group are synchronised over their own process group (``nn.SyncBatchNorm``
  on CUDA, :class:`DistributedBatchNorm` elsewhere).

Running statistics follow DataParallel on 2 GPUs. There the replica on the first GPU shares the module's
buffers and the other replicas' updates are dropped, so the running mean and variance are updated once per
forward pass, with BatchNorm's momentum, from the statistics of the first group of the batch alone (unbiased
variance over that group). :class:`GroupBatchNorm` does exactly that; under DistributedDataParallel, which
broadcasts rank 0's buffers before every forward pass, rank 0's first group plays that part.

:func:`convert_sync_batchnorm` makes BatchNorm use the statistics of the whole global batch (``--sync-bn``
under torchrun): ``nn.SyncBatchNorm`` on CUDA, :class:`DistributedBatchNorm` elsewhere
(``nn.SyncBatchNorm`` refuses CPU tensors, so CPU/gloo runs and the tests use this one). Both are plain
BatchNorm when no process group of more than one rank is initialised.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from reid.utils.distributed import gather_batch, world_size
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


class DistributedBatchNorm(_BatchNorm):
    """BatchNorm over the global batch of all ranks, for (N, C), (N, C, L) and (N, C, H, W) inputs.

    In training mode with a process group of more than one rank, each rank computes the count, mean and sum
    of squared deviations of its shard per channel; these are gathered with :func:`gather_batch`
    (differentiable, one collective per layer) and combined with Chan et al.'s parallel formula, which avoids
    the cancellation of ``E[x^2] - E[x]^2``. The normalisation, its gradient and the running statistics
    (unbiased variance, BatchNorm's momentum or cumulative average) are those of BatchNorm on the
    concatenated batch. Otherwise (evaluation, one process) it is plain ``F.batch_norm``.

    Works on any device and backend (``nn.SyncBatchNorm`` only accepts GPU tensors); parameters as
    ``nn.BatchNorm2d``, plus ``process_group``: the ranks whose shards are normalised together (default: all).
    """

    def __init__(self, *args, process_group: dist.ProcessGroup | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        check_batchnorm_input(self, input)

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        average_factor = running_average_factor(self)
        if self.training and world_size(self.process_group) > 1:
            return self._global_batch_norm(input, average_factor)
        # Evaluation uses the running statistics, or the batch's own when none are tracked, as BatchNorm does.
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep_running = not self.training or self.track_running_stats
        return F.batch_norm(
            input,
            self.running_mean if keep_running else None,
            self.running_var if keep_running else None,
            self.weight, self.bias, use_batch_stats, average_factor, self.eps,
        )

    def _global_batch_norm(self, input: Tensor, average_factor: float) -> Tensor:
        # Statistics in at least float32, as BatchNorm does for half-precision inputs.
        compute_dtype = torch.promote_types(input.dtype, torch.float32)
        values = input.to(compute_dtype)
        channel_shape = (1, -1) + (1,) * (input.dim() - 2)
        mean, variance, count = _global_moments(values, channel_shape, self.process_group)
        inverse_std = torch.rsqrt(variance + self.eps)
        normalised = (values - mean.view(channel_shape)) * inverse_std.view(channel_shape)
        if self.affine:
            normalised = normalised * self.weight.view(channel_shape) + self.bias.view(channel_shape)
        if self.track_running_stats:
            self._update_running_stats(mean, variance, count, average_factor)
        return normalised.to(input.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, variance: Tensor, count: Tensor,
                              average_factor: float) -> None:
        unbiased = variance * (count / (count - 1).clamp(min=1))
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), average_factor)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), average_factor)


def _global_moments(values: Tensor, channel_shape: tuple[int, ...], group: dist.ProcessGroup | None
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """Per-channel mean and biased variance of the batch of ``group``, and its number of values per channel."""
    channels = values.shape[1]
    reduce_dims = [dim for dim in range(values.dim()) if dim != 1]
    local_mean = values.mean(dim=reduce_dims)
    local_squares = (values - local_mean.view(channel_shape)).pow(2).sum(dim=reduce_dims)
    local_count = values.new_full((1,), values.numel() // channels)
    stats = gather_batch(torch.cat([local_count, local_mean, local_squares]).unsqueeze(0), group)
    counts, means, squares = stats[:, :1], stats[:, 1:1 + channels], stats[:, 1 + channels:]
    total = counts.sum()
    mean = (counts * means).sum(dim=0) / total
    squares_about_mean = squares.sum(dim=0) + (counts * (means - mean).pow(2)).sum(dim=0)
    return mean, squares_about_mean / total, total.detach()


def convert_sync_batchnorm(module: nn.Module, device_type: str,
                           process_group: dist.ProcessGroup | None = None) -> nn.Module:
    """Make every BatchNorm of ``module`` use the statistics of the batch of ``process_group`` (default: every
    rank, the global batch).

    Parameters
    ----------
    module : nn.Module
        The model (or a single BatchNorm layer).
    device_type : str
        ``"cuda"``: ``nn.SyncBatchNorm.convert_sync_batchnorm``; anything else: every ``BatchNorm1d`` and
        ``BatchNorm2d`` becomes a :class:`DistributedBatchNorm` sharing its parameters and buffers.
    process_group : ProcessGroup or None
        The ranks whose shards are normalised together.

    Returns
    -------
    nn.Module
        The converted module (``module`` itself, modified in place, unless it is a BatchNorm layer).
    """
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    return replace_batchnorm(
        module, lambda layer: batchnorm_like(layer, DistributedBatchNorm, process_group=process_group))


def check_batchnorm_input(layer: _BatchNorm, input: Tensor) -> None:
    """The input ranks every BatchNorm replacement of this project accepts: 2-D, 3-D (BatchNorm1d) or 4-D."""
    if input.dim() not in (2, 3, 4):
        raise ValueError(f"{type(layer).__name__} expects a 2-D, 3-D or 4-D input, got {input.dim()}-D")


def running_average_factor(layer: _BatchNorm) -> float:
    """BatchNorm's running-average weight of this training batch; counts the batch when stats are tracked."""
    if not (layer.training and layer.track_running_stats and layer.num_batches_tracked is not None):
        return 0.0 if layer.momentum is None else layer.momentum
    layer.num_batches_tracked.add_(1)
    return 1.0 / float(layer.num_batches_tracked) if layer.momentum is None else layer.momentum


def replace_batchnorm(module: nn.Module, build: Callable[[_BatchNorm], nn.Module]) -> nn.Module:
    """Replace every ``BatchNorm1d`` and ``BatchNorm2d`` of ``module`` by ``build(layer)``.

    Returns the converted module: ``module`` itself, modified in place, unless it is a BatchNorm layer.
    """
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return build(module)
    for name, child in module.named_children():
        converted = replace_batchnorm(child, build)
        if converted is not child:
            setattr(module, name, converted)
    return module


def batchnorm_like(layer: _BatchNorm, layer_class: type[_BatchNorm], **options) -> _BatchNorm:
    """A ``layer_class`` with the options of ``layer``, sharing its parameters and buffers (the same objects,
    so an optimiser built before the conversion still updates them)."""
    replacement = layer_class(layer.num_features, layer.eps, layer.momentum, layer.affine,
                              layer.track_running_stats, **options)
    if layer.affine:
        replacement.weight = layer.weight
        replacement.bias = layer.bias
    replacement.running_mean = layer.running_mean
    replacement.running_var = layer.running_var
    replacement.num_batches_tracked = layer.num_batches_tracked
    replacement.train(layer.training)
    return replacement
