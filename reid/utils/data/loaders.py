"""DataLoaders for identity-balanced training batches, and what keeps a GPU fed from them.

SSG's epochs are short (one pass over the clusters: about 20 batches of 128 at Market-1501 scale, 70 epochs
per iteration), so a loader that restarts or drains its queue at every epoch boundary leaves the GPU waiting
for the first batches of every epoch. On CUDA :func:`identity_loader` therefore returns an
:class:`EpochStream`: one loader iterated without end, its workers prefetching across epoch boundaries, and
each batch copied to the GPU on a side stream while the previous one is computed on. The workers stop at the
resized, flipped uint8 images; the GPU converts, normalises and erases them (:class:`SplitTransform`).
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence, Sized
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from reid.utils.data.preprocessor import Item, Preprocessor
from reid.utils.data.sampler import RandomIdentitySampler
from reid.utils.data.transforms import SplitTransform
from reid.utils.runtime import Runtime, to_device

# Beyond this many loader processes a 16-core GPU box gains nothing: 8 workers decode and augment several
# times the images per second that a ResNet-50 step consumes.
MAX_DEFAULT_WORKERS = 8


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity where the system tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers() -> int:
    """The ``--workers`` default: the CPU cores this process may use, shared among the processes torchrun
    starts on this node, less one for the main process, at most :data:`MAX_DEFAULT_WORKERS`."""
    per_process = available_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(MAX_DEFAULT_WORKERS, per_process - 1))


def identity_loader(items: Sequence[Item], transform: Callable, runtime: Runtime, batch_size: int,
                    num_instances: int, workers: int, seed: int,
                    labels: np.ndarray | None = None, first_epoch: int = 0) -> DataLoader | EpochStream:
    """Batches of ``batch_size // num_instances`` identities x ``num_instances`` images.

    ``labels`` (N,) or (N, S+1) replaces the pids; identities are taken from its first column (SSG's global
    cluster). Under DDP each rank loads ``batch_size / world_size`` images of the same global batch.

    On CUDA with worker processes the result is an :class:`EpochStream` (the same batches, in the same
    order, with no pause at epoch boundaries, a :class:`SplitTransform` finished on the GPU); elsewhere a
    plain DataLoader, restarted at every epoch, whose augmentations draw the same random numbers as they
    always have.

    ``first_epoch`` > 0 continues a stopped run: the loader gives the batches that epoch would have had, and a
    plain DataLoader's workers the seeds it would have drawn (an :class:`EpochStream` of a continued run draws
    its augmentations anew).
    """
    identity = np.array([pid for _, pid, _ in items]) if labels is None else np.asarray(labels).reshape(
        len(items), -1)[:, 0]
    sampler = RandomIdentitySampler(identity, num_instances, batch_size, seed=seed,
                                    num_replicas=runtime.world_size, rank=runtime.rank)
    sampler.epoch = first_epoch
    generator = torch.Generator().manual_seed(seed)
    for _ in range(first_epoch):  # each pass of a DataLoader draws its workers' base seed from its generator
        torch.empty((), dtype=torch.int64).random_(generator=generator)
    streaming = runtime.device.type == "cuda" and workers > 0
    in_workers, finish = split_for_device(transform, runtime) if streaming else (transform, None)
    loader = DataLoader(Preprocessor(items, in_workers, labels), batch_size=batch_size // runtime.world_size,
                        sampler=EndlessSampler(sampler) if streaming else sampler, num_workers=workers,
                        pin_memory=runtime.device.type == "cuda", drop_last=True,
                        generator=generator)
    return EpochStream(loader, sampler.num_batches, runtime, finish) if streaming else loader


def split_for_device(transform: Callable, runtime: Runtime) -> tuple[Callable, Callable[..., torch.Tensor] | None]:
    """What the data workers run, and what finishes a batch on the device (for :func:`prefetch_to_device`):
    a :class:`SplitTransform`'s two halves on CUDA, otherwise the whole transform and nothing."""
    if runtime.device.type == "cuda" and isinstance(transform, SplitTransform):
        return transform.on_host, transform.on_device
    return transform, None


class EndlessSampler(Sampler[int]):
    """Passes of ``sampler`` one after the other, without end (nothing when a pass is empty)."""

    def __init__(self, sampler: Sampler[int] | Sized):
        self.sampler = sampler

    def __iter__(self) -> Iterator[int]:
        if len(self.sampler) == 0:
            return
        while True:
            yield from self.sampler


class EpochStream(Sized):
    """A loader over an :class:`EndlessSampler`, iterated once and cut into epochs of ``batches_per_epoch``.

    Each ``iter()`` yields the next epoch. The loader's workers and their prefetch queue live as long as the
    stream, so the first batches of an epoch are decoded while the last ones of the previous epoch are
    trained on; the batches are moved to the device ahead of use, their images finished there by ``finish``
    when given (:func:`prefetch_to_device`).
    """

    def __init__(self, loader: DataLoader, batches_per_epoch: int, runtime: Runtime,
                 finish: Callable[..., torch.Tensor] | None = None):
        self.loader = loader
        self.batches_per_epoch = batches_per_epoch
        self.runtime = runtime
        self.finish = finish
        self._batches: Iterator | None = None

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator:
        if self.batches_per_epoch == 0:
            return iter(())
        if self._batches is None:
            self._batches = prefetch_to_device(self.loader, self.runtime, self.finish)
        return itertools.islice(self._batches, self.batches_per_epoch)


def prefetch_to_device(batches: Iterable, runtime: Runtime,
                       finish: Callable[..., torch.Tensor] | None = None) -> Iterator:
    """The batches with their tensors on the runtime's device (images channels_last on CUDA).

    With ``finish``, a batch's images arrive as what :meth:`SplitTransform.on_host` returns (uint8 images,
    and erasing boxes in training) and leave as ``finish(*parts)`` computed on the device. On CUDA, batch
    k + 1 is copied from pinned memory and finished on a side stream while batch k is computed on, so the
    copy (12.5 MB for 128 uint8 images of 256x128) overlaps the model instead of preceding it. Elsewhere the
    batches are handed over in step with their consumer, untouched unless there is a ``finish``.
    """
    if runtime.device.type != "cuda":
        yield from batches if finish is None else (_batch_to_device(batch, runtime, finish) for batch in batches)
        return
    copy_stream = torch.cuda.Stream(runtime.device)
    upcoming = iter(batches)

    def copy_next():
        batch = next(upcoming, None)
        if batch is None:
            return None
        with torch.cuda.stream(copy_stream):
            return _batch_to_device(batch, runtime, finish)

    ahead = copy_next()
    while ahead is not None:
        compute_stream = torch.cuda.current_stream(runtime.device)
        compute_stream.wait_stream(copy_stream)
        batch = ahead
        for part in batch:
            if isinstance(part, torch.Tensor):
                part.record_stream(compute_stream)  # its memory is not reused before the model is done with it
        ahead = copy_next()
        yield batch


def _batch_to_device(batch: Sequence, runtime: Runtime, finish: Callable[..., torch.Tensor] | None) -> list:
    images, *rest = batch
    if finish is not None:
        parts = images if isinstance(images, (list, tuple)) else [images]
        images = finish(*(part.to(runtime.device, non_blocking=True) for part in parts))
    return [_tensor_to_device(part, runtime) for part in (images, *rest)]


def _tensor_to_device(part, runtime: Runtime):
    if not isinstance(part, torch.Tensor):
        return part
    if part.dim() == 4:
        return to_device(part, runtime)
    return part.to(runtime.device, non_blocking=True)
