"""Slow, plainly written k-reciprocal distances of SSG (ICCV 2019; docs/algorithm.md, grouping step 2) and of the
query/gallery re-ranking used by SSG++, in float64 numpy with loops over images.

They follow the equations line by line and are the yardstick of ``reid.rerank``: the tests compare against them
and ``benchmarks/grouping.py`` times them. Ties in rank order go to the smaller index (stable sort).
"""

from __future__ import annotations

import numpy as np


def clustered_features(seed: int, num: int, width: int = 16, spread: float = 0.5) -> np.ndarray:
    """Test input: unit rows (float32) scattered around num // 8 random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(2, num // 8), width))
    points = centres[rng.integers(0, len(centres), num)] + spread * rng.standard_normal((num, width))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def squared_distances(rows: np.ndarray, others: np.ndarray | None = None) -> np.ndarray:
    """``||x_i - y_j||^2`` in float64 (others = None: rows against themselves, the diagonal exactly 0)."""
    rows = np.asarray(rows, np.float64)
    between = rows if others is None else np.asarray(others, np.float64)
    squared = np.maximum((rows**2).sum(1)[:, None] + (between**2).sum(1)[None, :] - 2 * rows @ between.T, 0)
    if others is None:
        np.fill_diagonal(squared, 0)
    return squared


def reciprocal_set(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    """R(i, k): the j among the first k + 1 of rank_i whose own first k + 1 contain i."""
    return np.array([j for j in rank[i, : k + 1] if i in rank[j, : k + 1]], dtype=np.int64)


def encodings(squared: np.ndarray, k1: int, k2: int) -> tuple[np.ndarray, np.ndarray]:
    """The k-reciprocal encodings V after local query expansion, and the normalised distance."""
    num = len(squared)
    normalised = np.transpose(squared / np.max(squared, axis=0))
    rank = np.argsort(normalised, axis=1, kind="stable")
    half = int(np.round(k1 / 2))
    v = np.zeros((num, num))
    for i in range(num):
        reciprocal = reciprocal_set(rank, i, k1)
        expanded = list(reciprocal)
        for candidate in reciprocal:
            candidate_set = reciprocal_set(rank, candidate, half)
            if len(np.intersect1d(candidate_set, reciprocal)) > 2 / 3 * len(candidate_set):
                expanded.extend(candidate_set)
        expanded = np.unique(expanded)
        weight = np.exp(-normalised[i, expanded])
        v[i, expanded] = weight / weight.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(num)])
    return v, normalised


def jaccard_distance(v: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``1 - m / (2 - m)`` with ``m = sum_k min(V_ik, V_jk)``, clipped at 0, over an inverted index."""
    images_using = [np.flatnonzero(v[:, k]) for k in range(v.shape[1])]
    result = np.ones((len(rows), len(cols)))
    column_position = {j: b for b, j in enumerate(cols)}
    for a, i in enumerate(rows):
        shared = np.zeros(v.shape[0])
        for k in np.flatnonzero(v[i]):
            others = images_using[k]
            shared[others] += np.minimum(v[i, k], v[others, k])
        for j in np.flatnonzero(shared):
            if j in column_position:
                result[a, column_position[j]] = max(1 - shared[j] / (2 - shared[j]), 0.0)
    return result


def source_spread(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``a_i = min_m (1 - exp(-||t_i - s_m||^2))``, divided by its maximum."""
    spread = np.min(1 - np.exp(-squared_distances(target, source)), axis=1)
    return spread / np.max(spread)


def target_jaccard(target: np.ndarray, k1: int = 20, k2: int = 6) -> np.ndarray:
    """The Jaccard distance J between every two target images, dense N x N."""
    v, _ = encodings(squared_distances(target), k1, k2)
    everything = np.arange(len(target))
    return jaccard_distance(v, everything, everything)


def source_aware_distance(source: np.ndarray | None, target: np.ndarray, k1: int = 20, k2: int = 6,
                          lambda_value: float = 0.1) -> np.ndarray:
    """SSG's ``(1 - lambda) * J + lambda * (a_i + a_j)`` between target images, dense N x N."""
    jaccard = target_jaccard(target, k1, k2)
    if lambda_value == 0:
        return jaccard
    spread = source_spread(source, target)
    return (1 - lambda_value) * jaccard + lambda_value * (spread[:, None] + spread[None, :])


def query_gallery_distance(query: np.ndarray, gallery: np.ndarray, k1: int = 20, k2: int = 6,
                           lambda_value: float = 0.3) -> np.ndarray:
    """Classic re-ranking: encodings over the union, ``(1 - lambda) * J + lambda * d_norm`` on Q x G."""
    union = np.concatenate([query, gallery]).astype(np.float64)
    cosine_distance = 2 - 2 * union @ union.T
    np.fill_diagonal(cosine_distance, 0)
    v, normalised = encodings(np.maximum(cosine_distance, 0), k1, k2)
    num_query = len(query)
    gallery_images = np.arange(num_query, len(union))
    jaccard = jaccard_distance(v, np.arange(num_query), gallery_images)
    return (1 - lambda_value) * jaccard + lambda_value * normalised[:num_query, num_query:]


def paper_query_gallery_distance(query: np.ndarray, gallery: np.ndarray, k1: int = 20, k2: int = 6,
                                 lambda_value: float = 0.3) -> np.ndarray:
    """Zhong et al. (CVPR 2017) as the paper writes it: the Jaccard distance of eq. (10) with its sums of
    minima over sums of maxima, ``d_J = 1 - sum_j min(V_pj, V_gj) / sum_j max(V_pj, V_gj)``, on the encodings
    of eqs. (4)-(11), and the final distance of eq. (12), ``(1 - lambda) d_J + lambda d``."""
    union = np.concatenate([query, gallery]).astype(np.float64)
    v, normalised = encodings(squared_distances(union), k1, k2)
    num_query = len(query)
    result = np.empty((num_query, len(gallery)))
    for i in range(num_query):
        for j in range(len(gallery)):
            pair = v[[i, num_query + j]]
            jaccard = 1 - pair.min(axis=0).sum() / pair.max(axis=0).sum()
            result[i, j] = (1 - lambda_value) * jaccard + lambda_value * normalised[i, num_query + j]
    return result
