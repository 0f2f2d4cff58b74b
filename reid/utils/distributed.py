"""Process-group helpers: the differentiable gather of training (docs/algorithm.md, "BatchNorm groups and several
GPUs"), and the plain collectives that split a computation (the k-reciprocal distances of :mod:`reid.rerank`)
across ranks.

The released SSG code trained under DataParallel, where BatchNorm statistics were computed per GPU and the
triplet loss of each replica only mined negatives among that replica's images: results depended on the GPU
count. Under DistributedDataParallel one step over a global batch split across ranks equals one step of a
single process on the whole batch when every rank sees the whole batch where it matters:

- :func:`gather_batch` gives every rank the features of the whole global batch, keeping their gradient, so
  the block-mined triplet loss (docs/algorithm.md, grouping step 6) sees the same negatives as one process would
  (:func:`reid.trainers.gather_output` gathers a model output with it);
- the BatchNorm of the global batch (:func:`reid.models.convert_sync_batchnorm`) combines the ranks'
  statistics with it.

Both are the identity when no process group of more than one rank is initialised. The plain collectives below
need one (they take CPU tensors under gloo and this rank's GPU's under NCCL, moving blocks as needed).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

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


def rank() -> int:
    """This process's rank in the default process group; 0 when torch.distributed is not initialised."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def collective_device() -> torch.device:
    """Where the default process group's backend takes tensors: this rank's GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_uneven(tensor: Tensor) -> list[Tensor]:
    """Every rank's ``tensor`` in rank order, on the device of this rank's. Lengths along dim 0 may differ between
    ranks (the other dimensions and the dtype may not): the lengths go first, then tensors padded to the longest."""
    lengths = _all_lengths(tensor)
    if max(lengths) == 0:
        return [tensor[:0] for _ in lengths]
    padded = _padded(tensor, max(lengths))
    parts = [torch.empty_like(padded) for _ in lengths]
    dist.all_gather(parts, padded)
    return [part[:length].to(tensor.device) for part, length in zip(parts, lengths)]


def gather_uneven(tensor: Tensor, dst: int = 0) -> list[Tensor] | None:
    """:func:`all_gather_uneven` onto rank ``dst`` alone; None on the other ranks, which keep no copy."""
    lengths = _all_lengths(tensor)
    if max(lengths) == 0:
        return [tensor[:0] for _ in lengths] if rank() == dst else None
    padded = _padded(tensor, max(lengths))
    parts = [torch.empty_like(padded) for _ in lengths] if rank() == dst else None
    dist.gather(padded, parts, dst=dst)
    return None if parts is None else [part[:length].to(tensor.device) for part, length in zip(parts, lengths)]


def all_reduce_min(tensor: Tensor) -> Tensor:
    """The element-wise minimum over the ranks (exact in any order), on the device of ``tensor``."""
    reduced = tensor.to(collective_device(), copy=True)
    dist.all_reduce(reduced, op=dist.ReduceOp.MIN)
    return reduced.to(tensor.device)


def broadcast_rows(matrix: Tensor, bounds: Sequence[int], rows_per_block: int) -> None:
    """Send rank r's rows ``bounds[r]:bounds[r + 1]`` of ``matrix`` to every rank, in place, ``rows_per_block``
    rows at a time (``matrix`` may live on another device than the backend's: blocks are moved)."""
    device = collective_device()
    for owner in range(len(bounds) - 1):
        for start in range(bounds[owner], bounds[owner + 1], rows_per_block):
            rows = matrix[start:min(start + rows_per_block, bounds[owner + 1])]
            block = rows.to(device).contiguous()
            dist.broadcast(block, src=owner)
            if block is not rows and rank() != owner:
                rows.copy_(block)


def _all_lengths(tensor: Tensor) -> list[int]:
    length = torch.tensor([tensor.shape[0]], device=collective_device())
    lengths = [torch.empty_like(length) for _ in range(world_size())]
    dist.all_gather(lengths, length)
    return [int(length) for length in lengths]


def _padded(tensor: Tensor, length: int) -> Tensor:
    padded = torch.zeros((length, *tensor.shape[1:]), dtype=tensor.dtype, device=collective_device())
    padded[: tensor.shape[0]] = tensor
    return padded


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
