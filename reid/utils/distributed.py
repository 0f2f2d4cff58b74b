"""Process-group helpers and the differentiable gather (docs/algorithm.md, "BatchNorm groups and several GPUs").

The released SSG code trained under DataParallel, where BatchNorm statistics were computed per GPU and the
triplet loss of each replica only mined negatives among that replica's images: results depended on the GPU
count. Under DistributedDataParallel one step over a global batch split across ranks equals one step of a
single process on the whole batch when every rank sees the whole batch where it matters:

- :func:`gather_batch` gives every rank the features of the whole global batch, keeping their gradient, so
  the block-mined triplet loss (docs/algorithm.md, grouping step 6) sees the same negatives as one process would
  (:func:`reid.trainers.gather_output` gathers a model output with it);
- the BatchNorm of the global batch (:func:`reid.models.convert_sync_batchnorm`) combines the ranks'
  statistics with it.

Everything is the identity when no process group of more than one rank is initialised.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from reid.utils.runtime import Runtime


def print_digest(runtime: Runtime, what: str, values: np.ndarray) -> None:
    """Under DDP, print a digest of ``values`` (the labels this rank trains on) with the rank: the log shows that
    the ranks agree. One write with its newline: ``print`` writes the end apart, and another rank's line could
    land between."""
    if runtime.distributed:
        digest = hashlib.sha1(np.ascontiguousarray(values).tobytes()).hexdigest()[:12]
        print(f"rank {runtime.rank}: {what} digest {digest}\n", end="", flush=True)


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
