"""DataLoaders for identity-balanced training batches."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from reid.utils.data.preprocessor import Item, Preprocessor
from reid.utils.data.sampler import RandomIdentitySampler
from reid.utils.runtime import Runtime


def identity_loader(items: Sequence[Item], transform: Callable, runtime: Runtime, batch_size: int,
                    num_instances: int, workers: int, seed: int, labels: np.ndarray | None = None) -> DataLoader:
    """Batches of ``batch_size // num_instances`` identities x ``num_instances`` images.

    ``labels`` (N,) or (N, S+1) replaces the pids; identities are taken from its first column (SSG's global
    cluster). Under DDP each rank loads ``batch_size / world_size`` images of the same global batch.
    """
    identity = np.array([pid for _, pid, _ in items]) if labels is None else np.asarray(labels).reshape(
        len(items), -1)[:, 0]
    sampler = RandomIdentitySampler(identity, num_instances, batch_size, seed=seed,
                                    num_replicas=runtime.world_size, rank=runtime.rank)
    cuda = runtime.device.type == "cuda"
    return DataLoader(Preprocessor(items, transform, labels), batch_size=batch_size // runtime.world_size,
                      sampler=sampler, num_workers=workers, pin_memory=cuda, drop_last=True,
                      persistent_workers=cuda and workers > 0,
                      generator=torch.Generator().manual_seed(seed))
