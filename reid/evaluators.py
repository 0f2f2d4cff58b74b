"""Feature extraction (flip sum, per-type or joint L2 normalisation) and the query/gallery evaluator, with
optional k-reciprocal re-ranking (Zhong et al., CVPR 2017) of the query/gallery distances."""
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
from reid.rerank import re_ranking_query_gallery
from reid.utils.data.loaders import default_workers, prefetch_to_device, split_for_device
from reid.utils.data.preprocessor import Item, Preprocessor
from reid.utils.data.transforms import test_transform
from reid.utils.distributed import collective_device
from reid.utils.osutils import write_atomically
from reid.utils.runtime import Runtime, amp_dtype
from reid.utils.visualize import visualize_ranked_results

TOPK = (1, 5, 10)
# Zhong et al.'s setting for query/gallery re-ranking, the one papers report.
RERANK = dict(k1=20, k2=6, lambda_value=0.3)
RERANK_SUFFIX = "_rerank"


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


def evaluate_features(query_features: torch.Tensor, gallery_features: torch.Tensor, query: Sequence[Item],
                      gallery: Sequence[Item], rerank: bool = False, distributed: bool = False
                      ) -> tuple[dict[str, float], np.ndarray]:
    """Metrics of L2-normalised evaluation features, with the re-ranked ones (``*_rerank``) when ``rerank``,
    and the last distance matrix ranked (the re-ranked one with ``rerank``).

    The re-ranking reuses the query x gallery distances and overwrites them: the matrix is the largest
    object of an evaluation (3.8 GB at MSMT17 size) and there is only ever one. It runs on the features'
    device; with ``distributed`` (every rank calls, with the same features) each rank re-ranks its share of the
    queries and receives the others' rows (:func:`reid.rerank.re_ranking_query_gallery`).
    """
    distmat = pairwise_distance(query_features, gallery_features).cpu().numpy()
    metrics = evaluate_distances(distmat, query, gallery)
    if rerank:
        re_ranking_query_gallery(query_features, gallery_features, **RERANK, distances=distmat,
                                 distributed=distributed)
        reranked = evaluate_distances(distmat, query, gallery)
        metrics.update({name + RERANK_SUFFIX: value for name, value in reranked.items()})
    return metrics, distmat


def _ids_cams(items: Sequence[Item]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([pid for _, pid, _ in items]), np.array([cam for _, _, cam in items])


def format_metrics(metrics: dict[str, float]) -> str:
    """``mAP ..  top-1 ..`` and, when the metrics hold re-ranked figures, a second line of those."""
    lines = []
    for suffix, label in (("", ""), (RERANK_SUFFIX, "re-ranked: ")):
        if f"mAP{suffix}" in metrics:
            ranks = "  ".join(f"top-{k} {metrics[f'top{k}{suffix}']:.1f}%" for k in TOPK)
            lines.append(f"{label}mAP {metrics[f'mAP{suffix}']:.1f}%  {ranks}")
    return "\n".join(lines)


class Evaluator:
    """Extracts query and gallery features with one model and reports mAP and CMC.

    With ``rerank`` every evaluation also re-ranks the query/gallery distances (k-reciprocal encoding,
    Zhong et al. 2017, with k1 20, k2 6, lambda 0.3) and adds ``mAP_rerank``, ``top1_rerank``,
    ``top5_rerank`` and ``top10_rerank`` to the metrics; the figures without re-ranking keep their names.
    """

    def __init__(self, model: nn.Module, runtime: Runtime, height: int, width: int, batch_size: int = 128,
                 workers: int | None = None, amp: bool = False, rerank: bool = False):
        self.model = model
        self.runtime = runtime
        self.size = (height, width)
        self.batch_size = batch_size
        self.workers = workers
        self.amp = amp
        self.rerank = rerank

    def features(self, items: Sequence[Item], desc: str) -> torch.Tensor:
        """Pooled features on the model's device, where the distances are computed."""
        return extract_features(self.model, items, self.runtime, *self.size, batch_size=self.batch_size,
                                workers=self.workers, desc=desc, on_device=True, amp=self.amp)

    def evaluate(self, query: Sequence[Item], gallery: Sequence[Item], save_features: str | None = None,
                 visrank: int = 0, visrank_dir: str = "") -> dict[str, float]:
        """Metrics in percent; optionally saves the features (HDF5) and draws ``visrank`` ranked lists (of
        the re-ranked distances with ``rerank``). Under DDP every rank computes the metrics, the re-ranking split
        across the ranks, and rank 0 writes the files while the others wait for it."""
        # The pooled features are dropped as soon as they are normalised: at MSMT17 size each copy is 2.3 GB.
        query_features = eval_features(self.features(query, "query features"))
        # A validation split is its own gallery: extract it once.
        gallery_features = (query_features if gallery is query
                            else eval_features(self.features(gallery, "gallery features")))
        metrics, distmat = evaluate_features(query_features, gallery_features, query, gallery, self.rerank,
                                             distributed=self.runtime.distributed)
        print(format_metrics(metrics))
        if save_features and self.runtime.is_main:
            save_features_h5(save_features, {"query": (query, query_features),
                                             "gallery": (gallery, gallery_features)})
        if visrank and self.runtime.is_main:
            paths = visualize_ranked_results(distmat, query, gallery, visrank_dir, visrank, size=self.size)
            print(f"ranked lists of {len(paths)} queries in {visrank_dir}")
        self.runtime.barrier()  # the next collective would count rank 0's writing against --dist-timeout
        return metrics

    def validate(self, items: Sequence[Item]) -> dict[str, float]:
        """The source model's selection score (spec section 3): the validation images ranked against each other
        on the flip-summed, L2-normalised global pool, scored by open-reid's ``allshots`` top-1 (each of a
        query's n true matches counts 1/n at its rank among the false matches, so the score keeps rising after
        rank-1 saturates), with the mAP of the same ranking. Percent."""
        features = type_features(self.features(items, "validation features"))[0]
        distmat = pairwise_distance(features, features).cpu().numpy()
        ids, cams = _ids_cams(items)
        top1 = cmc(distmat, ids, ids, cams, cams, topk=1, first_match_break=False)[0]
        metrics = {"top1": 100 * float(top1), "mAP": 100 * mean_ap(distmat, ids, ids, cams, cams)}
        print(f"allshots top-1 {metrics['top1']:.2f}%  mAP {metrics['mAP']:.2f}% (global pool)")
        return metrics


def save_features_h5(fpath: str, subsets: dict[str, tuple[Sequence[Item], torch.Tensor]],
                     extra: dict[str, dict[str, torch.Tensor]] | None = None, attrs: dict | None = None) -> None:
    """Write each subset's features with its file names, pids and cameras to an HDF5 file (one group each),
    atomically.

    ``extra`` adds more datasets to a subset's group (``{"images": {"features_upper": ...}}``), ``attrs``
    attributes to the file's root (how the features were made).
    """
    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as h5:
            h5.attrs.update(attrs or {})
            for name, (items, features) in subsets.items():
                group = h5.create_group(name)
                group.create_dataset("features", data=features.cpu().numpy(), compression="gzip")
                group.create_dataset("fnames", data=np.array([f for f, _, _ in items], dtype=h5py.string_dtype()))
                ids, cams = _ids_cams(items)
                group.create_dataset("pids", data=ids)
                group.create_dataset("camids", data=cams)
                for dataset, values in (extra or {}).get(name, {}).items():
                    group.create_dataset(dataset, data=values.cpu().numpy(), compression="gzip")

    write_atomically(fpath, write)
