"""Training that does not depend on the number of processes (SSG spec section 8, "per-GPU BatchNorm").

The released SSG code trained under DataParallel, where BatchNorm statistics were computed per GPU and the
triplet loss of each replica only mined negatives among that replica's images: results depended on the GPU
count. Under DistributedDataParallel this module makes one step over a global batch split across ranks equal
to one step of a single process on the whole batch:

- :func:`gather_batch` / :func:`gather_output` give every rank the features of the whole global batch, so the
  block-mined triplet loss (spec section 4, step 6) sees the same negatives as one process would;
- :func:`convert_sync_batchnorm` makes BatchNorm use the statistics of the whole global batch:
  ``nn.SyncBatchNorm`` on CUDA, :class:`DistributedBatchNorm` elsewhere (``nn.SyncBatchNorm`` refuses CPU
  tensors, so CPU/gloo runs and the tests use this one).

Everything is the identity (plain BatchNorm) when no process group of more than one rank is initialised.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

if TYPE_CHECKING:
    from reid.models import ReIDOutput


def world_size(group: dist.ProcessGroup | None = None) -> int:
    """Number of processes of ``group`` (default: all); 1 when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(group)
    return 1


class _GatherBatch(torch.autograd.Function):
    """All-gather along dim 0 whose backward is the adjoint of the gather: sum over ranks, own slice."""

    @staticmethod
    def forward(ctx, tensor: Tensor, group: dist.ProcessGroup | None) -> Tensor:
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        ctx.shard_size = tensor.shape[0]
        tensor = tensor.contiguous()
        shards = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(shards, tensor, group=group)
        return torch.cat(shards)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None]:
        # Cloned: the all-reduce is in place and autograd may hand the same buffer to other consumers.
        summed = grad_output.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(summed, group=ctx.group)
        start = ctx.rank * ctx.shard_size
        return summed[start:start + ctx.shard_size], None


def gather_batch(tensor: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """Concatenate every rank's ``tensor`` along dim 0, in rank order, keeping the gradient.

    Every rank must pass a tensor of the same shape (the identity sampler gives each rank the same number of
    whole identity blocks). Works with gloo and NCCL; the identity without an initialised process group of
    more than one rank.

    Why the gradient is right: the backward all-reduces (sums) the incoming gradient over the ranks and keeps
    this rank's slice, which is the exact adjoint of the gather for the objective ``sum_r L_r``, ``L_r`` being
    the loss rank r computes. Each rank computes the same full-batch loss ``L`` on the gathered tensor, so
    ``sum_r L_r = W L`` and this rank's input receives ``W dL/dx_local``; its parameter gradient is
    ``W dL/dtheta_r``, the contribution of its own shard. DistributedDataParallel averages parameter gradients
    over the ``W`` ranks: ``(1/W) sum_r W dL/dtheta_r = dL/dtheta``, exactly the gradient one process computes
    on the whole batch. The same adjoint (sum of the incoming gradients) is what synchronised BatchNorm uses,
    so the two compose; ``tests/test_distributed.py`` checks the resulting weights against one process.

    Parameters
    ----------
    tensor : Tensor
        (B_local, ...) this rank's shard.
    group : ProcessGroup or None
        Gather over these ranks only (their shards, in their group rank order); default: every rank.

    Returns
    -------
    Tensor
        (W * B_local, ...) the global batch, rank 0's shard first.
    """
    if world_size(group) == 1:
        return tensor
    return _GatherBatch.apply(tensor, group)


def gather_output(output: ReIDOutput, labels: Tensor) -> tuple[ReIDOutput, Tensor]:
    """Gather a model output and its labels over the ranks (see :func:`gather_batch`).

    Parameters
    ----------
    output : ReIDOutput
        This rank's pooled features, embedding and logits (or None).
    labels : Tensor
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
