"""Feature extraction (Fu et al., ICCV 2019; docs/algorithm.md, "Features"): the pooled features of an image
plus those of its mirror image, normalised per feature type (what grouping clusters) or jointly (what evaluation
ranks), and the HDF5 files that keep them.
"""
from __future__ import annotations

import io
from collections.abc import Sequence

import h5py
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from reid.utils.data.loaders import default_workers, prefetch_to_device, split_for_device
from reid.utils.data.preprocessor import Item, Preprocessor
from reid.utils.data.transforms import test_transform
from reid.utils.distributed import collective_device
from reid.utils.osutils import write_atomically
from reid.utils.runtime import Runtime, amp_dtype


@torch.no_grad()
def extract_features(model: nn.Module, items: Sequence[Item], runtime: Runtime, height: int, width: int,
                     batch_size: int = 128, workers: int | None = None, desc: str = "features",
                     on_device: bool = False, amp: bool = False) -> torch.Tensor:
    """Pooled features ``f(x) + f(flip(x))`` of every item, shape (N, S+1, C), float32, not normalised.

    The features come back on the CPU, or with ``on_device`` on the model's device, where the next step
    (grouping, distances) runs without waiting for a copy and without a synchronisation per batch. With
    ``amp`` the model runs under autocast on CUDA (as ``--amp`` trains); the features are float32 either way.
    Under DDP each rank extracts a contiguous shard and the shards are gathered, so every rank returns the
    whole matrix. ``workers`` loader processes decode the images (default: what this machine has,
    :func:`reid.utils.data.loaders.default_workers`). Use :func:`type_features` or :func:`eval_features` to
    normalise.
    """
    was_training = model.training
    model.eval()
    shard = _shard(len(items), runtime)
    in_workers, finish = split_for_device(test_transform(height, width), runtime)  # normalised on a GPU
    loader = DataLoader(Preprocessor([items[i] for i in shard], in_workers), batch_size=batch_size,
                        num_workers=default_workers() if workers is None else workers,
                        pin_memory=runtime.device.type == "cuda")
    chunks = []
    batches = prefetch_to_device(loader, runtime, finish)
    dtype = amp_dtype(runtime.device) if amp else None
    for images, *_ in tqdm(batches, total=len(loader), desc=desc, leave=False, disable=not runtime.is_main or None):
        with torch.autocast(runtime.device.type, dtype=dtype, enabled=dtype is not None):
            pooled = flip_sum(model, images)
        chunks.append(pooled.float() if on_device else pooled.float().cpu())
    model.train(was_training)
    features = torch.cat(chunks) if chunks else torch.empty(0)
    features = _gather(features, len(items), runtime)
    return features.to(runtime.device) if on_device else features.cpu()


def flip_sum(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Pooled features of the images plus those of their horizontal mirror images, (B, S+1, C)."""
    return model(images).pooled + model(torch.flip(images, dims=[3])).pooled


def _shard(count: int, runtime: Runtime) -> range:
    per_rank = -(-count // runtime.world_size)
    return range(runtime.rank * per_rank, min(count, (runtime.rank + 1) * per_rank))


def _gather(features: torch.Tensor, count: int, runtime: Runtime) -> torch.Tensor:
    if not runtime.distributed:
        return features
    per_rank = -(-count // runtime.world_size)
    padded = torch.zeros((per_rank, *features.shape[1:]), dtype=features.dtype, device=collective_device())
    padded[: len(features)] = features
    shards = [torch.empty_like(padded) for _ in range(runtime.world_size)]
    dist.all_gather(shards, padded)
    return torch.cat(shards)[:count]


def type_features(pooled: torch.Tensor) -> list[torch.Tensor]:
    """One L2-normalised (N, C) matrix per feature type: global, then the stripes top to bottom."""
    return [F.normalize(pooled[:, t], dim=1) for t in range(pooled.shape[1])]


def eval_features(pooled: torch.Tensor) -> torch.Tensor:
    """The evaluation feature: the S+1 pooled features concatenated, then L2-normalised once."""
    return F.normalize(pooled.flatten(1), dim=1)


def save_features_h5(fpath: str, subsets: dict[str, tuple[Sequence[Item], torch.Tensor]],
                     extra: dict[str, dict[str, torch.Tensor]] | None = None, attrs: dict | None = None) -> None:
    """Write each subset's features with its file names, pids and cameras to an HDF5 file (one group each),
    atomically.

    ``extra`` adds more datasets to a subset's group (``{"images": {"features_upper": ...}}``), ``attrs``
    attributes to the file's root (how the features were made).
    """
    def write(tmp: str) -> None:
        # Built in memory, then written: HDF5 flushes compressed data at close, and a close that the disk fails
        # (full, file-size limit) crashes the process instead of raising.
        image = io.BytesIO()
        with h5py.File(image, "w") as h5:
            h5.attrs.update(attrs or {})
            for name, (items, features) in subsets.items():
                group = h5.create_group(name)
                group.create_dataset("features", data=features.cpu().numpy(), compression="gzip")
                group.create_dataset("fnames", data=np.array([f for f, _, _ in items], dtype=h5py.string_dtype()))
                group.create_dataset("pids", data=np.array([pid for _, pid, _ in items]))
                group.create_dataset("camids", data=np.array([cam for _, _, cam in items]))
                for dataset, values in (extra or {}).get(name, {}).items():
                    group.create_dataset(dataset, data=values.cpu().numpy(), compression="gzip")
        with open(tmp, "wb") as stream:
            stream.write(image.getbuffer())

    write_atomically(fpath, write)
