"""The query/gallery evaluator (mAP and CMC, Market-1501 protocol), with optional k-reciprocal re-ranking (Zhong
et al., CVPR 2017) of the query/gallery distances, and the source model's validation score."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from reid.evaluation_metrics import cmc, mean_ap
from reid.feature_extraction import eval_features, extract_features, save_features_h5, type_features
from reid.rerank import re_ranking_query_gallery
from reid.utils.data.preprocessor import Item
from reid.utils.runtime import Runtime
from reid.utils.visualize import visualize_ranked_results

TOPK = (1, 5, 10)
RERANK_SUFFIX = "_rerank"


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
    if rerank:  # Zhong et al.'s setting
        re_ranking_query_gallery(query_features, gallery_features, distances=distmat, distributed=distributed)
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

    With ``rerank`` every evaluation also re-ranks the query/gallery distances (k-reciprocal encoding in
    Zhong et al.'s setting, :func:`reid.rerank.re_ranking_query_gallery`) and adds ``mAP_rerank``, ``top1_rerank``,
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
        """The source model's selection score (docs/algorithm.md, "Source training"): the validation images
        ranked against each other on the flip-summed, L2-normalised global pool, scored by open-reid's
        ``allshots`` top-1 (each of a query's n true matches counts 1/n at its rank among the false matches, so
        the score keeps rising after rank-1 saturates), with the mAP of the same ranking. Percent."""
        features = type_features(self.features(items, "validation features"))[0]
        distmat = pairwise_distance(features, features).cpu().numpy()
        ids, cams = _ids_cams(items)
        top1 = cmc(distmat, ids, ids, cams, cams, topk=1, first_match_break=False)[0]
        metrics = {"top1": 100 * float(top1), "mAP": 100 * mean_ap(distmat, ids, ids, cams, cams)}
        print(f"allshots top-1 {metrics['top1']:.2f}%  mAP {metrics['mAP']:.2f}% (global pool)")
        return metrics


