"""Feature extraction (flip sum, per-type or joint L2 normalisation) and the query/gallery evaluator."""
from __future__ import annotations

from collections.abc import Sequence

import h5py
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from reid.evaluation_metrics import cmc, mean_ap
from reid.utils.data.loaders import prefetch_to_device
from reid.utils.data.preprocessor import Item, Preprocessor
from reid.utils.data.transforms import test_transform
from reid.utils.runtime import Runtime, amp_dtype
from reid.utils.visualize import visualize_ranked_results

TOPK = (1, 5, 10)


@torch.no_grad()
def extract_features(model: nn.Module, items: Sequence[Item], runtime: Runtime, height: int, width: int,
                     batch_size: int = 128, workers: int = 4, desc: str = "features",
                     on_device: bool = False, amp: bool = False) -> torch.Tensor:
    """Pooled features ``f(x) + f(flip(x))`` of every item, shape (N, S+1, C), float32, not normalised.

    The features come back on the CPU, or with ``on_device`` on the model's device, where the next step
    (grouping, distances) runs without waiting for a copy and without a synchronisation per batch. With
    ``amp`` the model runs under autocast on CUDA (as ``--amp`` trains); the features are float32 either way.
    Under DDP each rank extracts a contiguous shard and the shards are gathered, so every rank returns the
    whole matrix. Use :func:`type_features` or :func:`eval_features` to normalise.
    """
    was_training = model.training
    model.eval()
    shard = _shard(len(items), runtime)
    loader = DataLoader(Preprocessor([items[i] for i in shard], test_transform(height, width)),
                        batch_size=batch_size, num_workers=workers, pin_memory=runtime.device.type == "cuda")
    chunks = []
    batches = prefetch_to_device(loader, runtime)
    dtype = amp_dtype(runtime.device) if amp else None
    for images, *_ in tqdm(batches, total=len(loader), desc=desc, leave=False, disable=not runtime.is_main or None):
        with torch.autocast(runtime.device.type, dtype=dtype, enabled=dtype is not None):
            pooled = model(images).pooled + model(torch.flip(images, dims=[3])).pooled
        chunks.append(pooled.float() if on_device else pooled.float().cpu())
    model.train(was_training)
    features = torch.cat(chunks) if chunks else torch.empty(0)
    features = _gather(features, len(items), runtime)
    return features.to(runtime.device) if on_device else features.cpu()


def _shard(count: int, runtime: Runtime) -> range:
    per_rank = -(-count // runtime.world_size)
    return range(runtime.rank * per_rank, min(count, (runtime.rank + 1) * per_rank))


def _gather(features: torch.Tensor, count: int, runtime: Runtime) -> torch.Tensor:
    if not runtime.distributed:
        return features
    per_rank = -(-count // runtime.world_size)
    backend_device = runtime.device if dist.get_backend() == "nccl" else torch.device("cpu")
    padded = torch.zeros((per_rank, *features.shape[1:]), dtype=features.dtype, device=backend_device)
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


def pairwise_distance(query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (Q x G) between rows, computed as ||q||^2 + ||g||^2 - 2 q.g."""
    squared = (query.pow(2).sum(1, keepdim=True) + gallery.pow(2).sum(1).unsqueeze(0))
    return squared.addmm_(query, gallery.t(), beta=1, alpha=-2).clamp_(min=0)


def evaluate_distances(distmat: np.ndarray, query: Sequence[Item], gallery: Sequence[Item]) -> dict[str, float]:
    """mAP and CMC top-1/5/10 in percent (Market-1501 protocol) from a query x gallery distance matrix."""
    query_ids, query_cams = _ids_cams(query)
    gallery_ids, gallery_cams = _ids_cams(gallery)
    m_ap = mean_ap(distmat, query_ids, gallery_ids, query_cams, gallery_cams)
    scores = cmc(distmat, query_ids, gallery_ids, query_cams, gallery_cams, topk=max(TOPK))
    metrics = {"mAP": 100 * m_ap}
    metrics.update({f"top{k}": 100 * float(scores[k - 1]) for k in TOPK})
    return metrics


def _ids_cams(items: Sequence[Item]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([pid for _, pid, _ in items]), np.array([cam for _, _, cam in items])


def format_metrics(metrics: dict[str, float]) -> str:
    ranks = "  ".join(f"top-{k} {metrics[f'top{k}']:.1f}%" for k in TOPK)
    return f"mAP {metrics['mAP']:.1f}%  {ranks}"


class Evaluator:
    """Extracts query and gallery features with one model and reports mAP and CMC."""

    def __init__(self, model: nn.Module, runtime: Runtime, height: int, width: int, batch_size: int = 128,
                 workers: int = 4, amp: bool = False):
        self.model = model
        self.runtime = runtime
        self.size = (height, width)
        self.batch_size = batch_size
        self.workers = workers
        self.amp = amp

    def features(self, items: Sequence[Item], desc: str) -> torch.Tensor:
        """Pooled features on the model's device, where the distances are computed."""
        return extract_features(self.model, items, self.runtime, *self.size, batch_size=self.batch_size,
                                workers=self.workers, desc=desc, on_device=True, amp=self.amp)

    def evaluate(self, query: Sequence[Item], gallery: Sequence[Item], save_features: str | None = None,
                 visrank: int = 0, visrank_dir: str = "") -> dict[str, float]:
        """Metrics in percent; optionally saves the features (HDF5) and draws ``visrank`` ranked lists."""
        query_pooled = self.features(query, "query features")
        # A validation split is its own gallery: extract it once.
        gallery_pooled = query_pooled if gallery is query else self.features(gallery, "gallery features")
        query_features, gallery_features = eval_features(query_pooled), eval_features(gallery_pooled)
        if save_features and self.runtime.is_main:
            save_features_h5(save_features, {"query": (query, query_features),
                                             "gallery": (gallery, gallery_features)})
        distmat = pairwise_distance(query_features, gallery_features).cpu().numpy()
        metrics = evaluate_distances(distmat, query, gallery)
        print(format_metrics(metrics))
        if visrank and self.runtime.is_main:
            paths = visualize_ranked_results(distmat, query, gallery, visrank_dir, visrank, size=self.size)
            print(f"ranked lists of {len(paths)} queries in {visrank_dir}")
        return metrics


def save_features_h5(fpath: str, subsets: dict[str, tuple[Sequence[Item], torch.Tensor]]) -> None:
    """Write each subset's features with its file names, pids and cameras to an HDF5 file (one group each)."""
    with h5py.File(fpath, "w") as h5:
        for name, (items, features) in subsets.items():
            group = h5.create_group(name)
            group.create_dataset("features", data=features.cpu().numpy(), compression="gzip")
            group.create_dataset("fnames", data=np.array([f for f, _, _ in items], dtype=h5py.string_dtype()))
            ids, cams = _ids_cams(items)
            group.create_dataset("pids", data=ids)
            group.create_dataset("camids", data=cams)
