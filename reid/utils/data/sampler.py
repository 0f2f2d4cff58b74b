"""Identity samplers: batches made of whole identity blocks, for one process or split over DDP ranks."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class RandomIdentitySampler(Sampler[int]):
    """Yields indices in blocks of ``num_instances`` images of one identity.

    One epoch visits every identity once, in a shuffled order; an identity with fewer images than
    ``num_instances`` is drawn with replacement. The order is grouped into global batches of
    ``batch_size // num_instances`` identities and the last partial batch is dropped.

    Under DistributedDataParallel each of the ``num_replicas`` ranks takes its own contiguous share of whole
    blocks from every global batch, so the union of the ranks' batches is exactly the batch one process would
    draw with the same seed: the training is the same whatever the number of GPUs. Each pass draws a new
    order from ``(seed, epoch)`` and advances the epoch.
    """

    def __init__(self, labels: Sequence[int], num_instances: int, batch_size: int, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0):
        if batch_size % (num_instances * num_replicas):
            raise ValueError(f"batch size {batch_size} is not a multiple of num_instances {num_instances}"
                             f" x {num_replicas} process(es)")
        groups = defaultdict(list)
        for index, label in enumerate(labels):
            groups[int(label)].append(index)
        self.groups = [np.asarray(indices) for _, indices in sorted(groups.items())]
        self.num_instances = num_instances
        self.ids_per_batch = batch_size // num_instances
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    @property
    def num_batches(self) -> int:
        return len(self.groups) // self.ids_per_batch

    def __len__(self) -> int:
        return self.num_batches * self.ids_per_batch * self.num_instances // self.num_replicas

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        order = rng.permutation(len(self.groups))[: self.num_batches * self.ids_per_batch]
        blocks = [self._block(self.groups[g], rng) for g in order]
        share = self.ids_per_batch // self.num_replicas
        for start in range(0, len(blocks), self.ids_per_batch):
            mine = blocks[start + self.rank * share: start + (self.rank + 1) * share]
            yield from (int(i) for block in mine for i in block)

    def _block(self, indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        replace = len(indices) < self.num_instances
        return rng.choice(indices, size=self.num_instances, replace=replace)
