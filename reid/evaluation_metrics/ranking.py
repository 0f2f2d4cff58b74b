"""Re-ID ranking metrics: cumulative match characteristic (CMC) and mean average precision (mAP).

The protocol is open-reid's, the one SSG (Self-similarity Grouping, ICCV 2019) and the papers it is compared
with report on Market-1501, DukeMTMC-reID, MSMT17 and CUHK03, so the numbers agree with the literature:

- for each query, the gallery images with the query's identity *and* camera are removed;
- mAP is the mean, over the queries that keep a true match, of scikit-learn's non-interpolated average
  precision (``average_precision_score(y_true, -distance)``: tied distances form one threshold step);
- CMC ranks the gallery by distance, ties broken by gallery index, and counts where the first true match
  lands.

Neither metric sorts a ranking per query. A true match at distance d contributes
``(true matches at or below d) / (valid gallery images at or below d)`` to its query's average precision, and
the first true match's rank is the number of valid non-matches closer than it (plus those tied with it at a
smaller gallery index). The counts over the whole gallery come from one row sort (for mAP) or one comparison
pass (for CMC); the few gallery images sharing the query's identity are handled separately. Queries are
processed in chunks of bounded size on ``torch.get_num_threads()`` threads; every comparison is exact in the
distance matrix's own dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from reid.utils.errors import UserError

# About 8M distances per chunk keeps each worker's temporaries at a few tens of MB whatever the gallery size.
_CHUNK_ELEMENTS = 1 << 23
_SINGLE_SHOT_REPEATS = 10
_SINGLE_SHOT_SEED = 0
# Dtypes that numpy sorts and torch.searchsorted accepts as they are; other integers are widened to int64.
_NATIVE_DTYPES = tuple(
    np.dtype(name) for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8")
)


class NoValidQueryError(UserError, ValueError):
    """No query keeps a true match in the gallery once same-identity same-camera images are removed."""


@dataclass(frozen=True)
class _Problem:
    """A validated evaluation problem, with the gallery grouped by identity."""

    distmat: np.ndarray
    query_ids: np.ndarray
    gallery_ids: np.ndarray
    query_cams: np.ndarray
    gallery_cams: np.ndarray
    gallery_by_identity: np.ndarray  # gallery indices sorted by identity, increasing within one identity
    query_group_start: np.ndarray  # where each query's identity starts in gallery_by_identity
    query_group_size: np.ndarray  # how many gallery images share each query's identity

    def chunk(self, rows: slice) -> np.ndarray:
        """The distances of a chunk of queries, C-contiguous and checked for NaN."""
        distances = np.ascontiguousarray(self.distmat[rows])
        if distances.dtype.kind == "f" and np.isnan(distances.max()):
            raise UserError(
                f"distmat: expected real distances, found NaN in query rows {rows.start}..{rows.stop - 1}"
            )
        return distances


@dataclass(frozen=True)
class _IdentityBlock:
    """For a chunk of queries, the gallery images sharing each query's identity, padded to one width."""

    gallery_index: np.ndarray  # (rows, width), increasing along each row
    distance: np.ndarray  # (rows, width), the query's distance to that gallery image
    is_true_match: np.ndarray  # same identity, other camera
    is_junk: np.ndarray  # same identity, same camera: removed from the query's ranking


def cmc(
    distmat: np.ndarray | torch.Tensor,
    query_ids: Sequence[int] | np.ndarray | None = None,
    gallery_ids: Sequence[int] | np.ndarray | None = None,
    query_cams: Sequence[int] | np.ndarray | None = None,
    gallery_cams: Sequence[int] | np.ndarray | None = None,
    topk: int = 100,
    separate_camera_set: bool = False,
    single_gallery_shot: bool = False,
    first_match_break: bool = True,
) -> np.ndarray:
    """Cumulative match characteristic of a query-gallery distance matrix (open-reid's protocol).

    Parameters
    ----------
    distmat : np.ndarray or torch.Tensor
        Distances, queries x gallery; smaller means more similar.
    query_ids, gallery_ids : sequence of int, optional
        Identities; default ``arange`` (query i matches gallery i).
    query_cams, gallery_cams : sequence of int, optional
        Cameras; default 0 for queries and 1 for the gallery, so that nothing is removed.
    topk : int
        Length of the returned curve.
    separate_camera_set : bool
        Also remove every gallery image taken by the query's camera, whatever its identity.
    single_gallery_shot : bool
        Old CUHK03 protocol: keep one random gallery image per identity, average over 10 draws from a fixed
        ``numpy.random.RandomState`` seed.
    first_match_break : bool
        True (Market-1501 setting): count the rank of the first true match. False: each of a query's n true
        matches adds 1/n at its rank among the non-matches (the number of valid non-matches before it).

    Returns
    -------
    np.ndarray
        ``topk`` floats in [0, 1]: entry k is the fraction of valid queries whose match is within rank k + 1.

    Raises
    ------
    NoValidQueryError
        No query keeps a true match (also a ``ValueError``).
    UserError
        Inconsistent shapes, a ``topk`` below 1, or NaN distances.
    """
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 1:
        raise UserError(f"topk: expected a positive integer, got {topk!r}")
    problem = _prepare(distmat, query_ids, gallery_ids, query_cams, gallery_cams)
    if separate_camera_set or single_gallery_shot or not first_match_break:
        hits, n_valid = _cmc_hits_per_query(
            problem, int(topk), separate_camera_set, single_gallery_shot, first_match_break
        )
    else:
        ranks = _map_over_query_chunks(problem, _first_match_rank_chunk)
        ranks = ranks[ranks >= 0]
        n_valid = len(ranks)
        hits = np.bincount(ranks[ranks < topk], minlength=topk).astype(np.float64)
    if n_valid == 0:
        raise _no_valid_query(problem)
    return np.cumsum(hits) / n_valid


def mean_ap(
    distmat: np.ndarray | torch.Tensor,
    query_ids: Sequence[int] | np.ndarray | None = None,
    gallery_ids: Sequence[int] | np.ndarray | None = None,
    query_cams: Sequence[int] | np.ndarray | None = None,
    gallery_cams: Sequence[int] | np.ndarray | None = None,
) -> float:
    """Mean average precision of a query-gallery distance matrix (open-reid's protocol).

    Parameters
    ----------
    distmat : np.ndarray or torch.Tensor
        Distances, queries x gallery; smaller means more similar.
    query_ids, gallery_ids : sequence of int, optional
        Identities; default ``arange`` (query i matches gallery i).
    query_cams, gallery_cams : sequence of int, optional
        Cameras; default 0 for queries and 1 for the gallery, so that nothing is removed.

    Returns
    -------
    float
        The mean over queries that keep a true match of ``average_precision_score(y_true, -distance)`` on
        the gallery left after removing the query's identity seen by the query's camera.

    Raises
    ------
    NoValidQueryError
        No query keeps a true match (also a ``ValueError``).
    UserError
        Inconsistent shapes or NaN distances.
    """
    problem = _prepare(distmat, query_ids, gallery_ids, query_cams, gallery_cams)
    precisions = _map_over_query_chunks(problem, _average_precision_chunk)
    precisions = precisions[~np.isnan(precisions)]
    if len(precisions) == 0:
        raise _no_valid_query(problem)
    return float(precisions.mean())


def _prepare(distmat, query_ids, gallery_ids, query_cams, gallery_cams) -> _Problem:
    matrix = _as_distance_matrix(distmat)
    n_queries, n_gallery = matrix.shape
    gallery_ids = _as_labels(gallery_ids, n_gallery, np.arange(n_gallery), "gallery_ids", "column")
    gallery_cams = _as_labels(gallery_cams, n_gallery, np.ones(n_gallery, np.int64), "gallery_cams", "column")
    query_ids = _as_labels(query_ids, n_queries, np.arange(n_queries), "query_ids", "row")
    query_cams = _as_labels(query_cams, n_queries, np.zeros(n_queries, np.int64), "query_cams", "row")
    if matrix.size == 0:
        raise NoValidQueryError(
            f"distmat: no query has a true match in an empty {n_queries} x {n_gallery} matrix"
        )
    gallery_by_identity = np.argsort(gallery_ids, kind="stable")
    identities, starts, sizes = np.unique(
        gallery_ids[gallery_by_identity], return_index=True, return_counts=True
    )
    slot = np.minimum(np.searchsorted(identities, query_ids), len(identities) - 1)
    in_gallery = identities[slot] == query_ids
    return _Problem(
        distmat=matrix,
        query_ids=query_ids,
        gallery_ids=gallery_ids,
        query_cams=query_cams,
        gallery_cams=gallery_cams,
        gallery_by_identity=gallery_by_identity,
        query_group_start=np.where(in_gallery, starts[slot], 0),
        query_group_size=np.where(in_gallery, sizes[slot], 0),
    )


def _as_distance_matrix(distmat) -> np.ndarray:
    if isinstance(distmat, torch.Tensor):
        distmat = distmat.detach().cpu()
        # numpy has no bfloat16; float32 represents every bfloat16 value exactly.
        distmat = (distmat.float() if distmat.dtype == torch.bfloat16 else distmat).numpy()
    matrix = np.asarray(distmat)
    if matrix.ndim != 2:
        raise UserError(f"distmat: expected a 2-D queries x gallery matrix, got shape {matrix.shape}")
    if matrix.dtype in _NATIVE_DTYPES:
        return matrix
    if matrix.dtype.kind in "biu":
        return matrix.astype(np.int64)
    raise UserError(f"distmat: expected real distances (float16/32/64 or integers), got dtype {matrix.dtype}")


def _as_labels(values, length: int, default: np.ndarray, name: str, axis: str) -> np.ndarray:
    if values is None:
        return default
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    labels = np.asarray(values)
    if labels.size == 0:
        labels = labels.astype(np.int64)
    if labels.ndim != 1 or labels.dtype.kind not in "biu" or len(labels) != length:
        raise UserError(
            f"{name}: expected {length} integer labels (one per distmat {axis}), "
            f"got shape {labels.shape} of dtype {labels.dtype}"
        )
    return labels


def _no_valid_query(problem: _Problem) -> NoValidQueryError:
    n_queries, n_gallery = problem.distmat.shape
    return NoValidQueryError(
        f"query_ids/gallery_ids: none of the {n_queries} queries has a true match among the {n_gallery} "
        "gallery images once same-identity same-camera images are removed; expected query and gallery of "
        "one dataset"
    )


def _map_over_query_chunks(
    problem: _Problem, per_chunk: Callable[[_Problem, slice], np.ndarray]
) -> np.ndarray:
    """Run ``per_chunk`` on bounded chunks of query rows in parallel and join the per-query results."""
    n_queries, n_gallery = problem.distmat.shape
    step = max(1, _CHUNK_ELEMENTS // n_gallery)
    chunks = [slice(start, min(start + step, n_queries)) for start in range(0, n_queries, step)]
    # Sorting and comparing release the GIL, so threads share distmat without copying it.
    with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:
        return np.concatenate(list(pool.map(lambda rows: per_chunk(problem, rows), chunks)))


def _identity_block(problem: _Problem, rows: slice, distances: np.ndarray) -> _IdentityBlock:
    sizes = problem.query_group_size[rows]
    column = np.arange(sizes.max())
    in_group = column < sizes[:, None]
    # Padding columns point at the last valid position; in_group masks them out.
    last_position = len(problem.gallery_by_identity) - 1
    position = np.minimum(problem.query_group_start[rows, None] + column, last_position)
    gallery_index = problem.gallery_by_identity[position]
    same_camera = problem.gallery_cams[gallery_index] == problem.query_cams[rows, None]
    return _IdentityBlock(
        gallery_index=gallery_index,
        distance=np.take_along_axis(distances, gallery_index, axis=1),
        is_true_match=in_group & ~same_camera,
        is_junk=in_group & same_camera,
    )


def _ceiling(dtype: np.dtype) -> np.ndarray:
    """The largest value of ``dtype``: padding that sorts after (or ties with) every distance."""
    largest = np.inf if dtype.kind == "f" else np.iinfo(dtype).max
    return np.asarray(largest, dtype=dtype)


def _count_at_or_below(sorted_rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each entry of ``values``, how many entries of the same row of ``sorted_rows`` are <= it."""
    return torch.searchsorted(
        torch.from_numpy(sorted_rows), torch.from_numpy(np.ascontiguousarray(values)), right=True
    ).numpy()


def _members_at_or_below(distance: np.ndarray, members: np.ndarray) -> np.ndarray:
    """For each entry of ``distance``, how many members of its row have a distance <= it."""
    member_distance = np.sort(np.where(members, distance, _ceiling(distance.dtype)), axis=1)
    # The padding is counted only for entries at the ceiling, where every member is counted too: cap it off.
    return np.minimum(_count_at_or_below(member_distance, distance), members.sum(axis=1, keepdims=True))


def _average_precision_chunk(problem: _Problem, rows: slice) -> np.ndarray:
    """Average precision of each query of the chunk; NaN where no true match is left."""
    distances = problem.chunk(rows)
    block = _identity_block(problem, rows, distances)
    n_true = block.is_true_match.sum(axis=1)
    no_match = np.full(len(n_true), np.nan)
    if not n_true.any():
        return no_match
    gallery_at_or_below = _count_at_or_below(np.sort(distances, axis=1), block.distance)
    valid_at_or_below = gallery_at_or_below - _members_at_or_below(block.distance, block.is_junk)
    true_at_or_below = _members_at_or_below(block.distance, block.is_true_match)
    precision = np.divide(
        true_at_or_below, valid_at_or_below, out=np.zeros(block.distance.shape), where=block.is_true_match
    )
    return np.divide(precision.sum(axis=1), n_true, out=no_match, where=n_true > 0)


def _first_match_rank_chunk(problem: _Problem, rows: slice) -> np.ndarray:
    """0-based rank of each query's first true match in its filtered ranking; -1 where none is left."""
    distances = problem.chunk(rows)
    block = _identity_block(problem, rows, distances)
    has_match = block.is_true_match.any(axis=1)
    rank = np.full(len(has_match), -1)
    if not has_match.any():
        return rank
    first_distance = np.where(block.is_true_match, block.distance, _ceiling(distances.dtype)).min(axis=1)
    at_first = block.distance == first_distance[:, None]
    # Columns follow gallery order, so the first true match at that distance wins the stable tie-break.
    first_column = (block.is_true_match & at_first).argmax(axis=1)
    first_index = block.gallery_index[np.arange(len(rank)), first_column]
    closer = np.count_nonzero(distances < first_distance[:, None], axis=1)
    closer_junk = np.count_nonzero(block.is_junk & (block.distance < first_distance[:, None]), axis=1)
    tied = np.count_nonzero(distances == first_distance[:, None], axis=1)
    tied_same_identity = np.count_nonzero((block.is_true_match | block.is_junk) & at_first, axis=1)
    tied_earlier = np.zeros(len(rank), np.int64)
    # Another identity at exactly the first match's distance is rare outside integer distances: only those
    # rows pay for a second look at the gallery order.
    ties = np.flatnonzero(has_match & (tied > tied_same_identity))
    if len(ties):
        earlier = np.arange(distances.shape[1]) < first_index[ties, None]
        junk_earlier = block.is_junk[ties] & (block.gallery_index[ties] < first_index[ties, None])
        tied_earlier[ties] = np.count_nonzero(
            (distances[ties] == first_distance[ties, None]) & earlier, axis=1
        ) - np.count_nonzero(junk_earlier & at_first[ties], axis=1)
    rank[has_match] = (closer - closer_junk + tied_earlier)[has_match]
    return rank


def _cmc_hits_per_query(
    problem: _Problem,
    topk: int,
    separate_camera_set: bool,
    single_gallery_shot: bool,
    first_match_break: bool,
) -> tuple[np.ndarray, int]:
    """Open-reid's CMC options, one sorted ranking per query: per-rank hit weights and valid query count."""
    n_queries, n_gallery = problem.distmat.shape
    hits = np.zeros(topk)
    n_valid = 0
    random_state = np.random.RandomState(_SINGLE_SHOT_SEED)
    repeats = _SINGLE_SHOT_REPEATS if single_gallery_shot else 1
    step = max(1, _CHUNK_ELEMENTS // n_gallery)
    for start in range(0, n_queries, step):
        rows = slice(start, min(start + step, n_queries))
        for query, distances in enumerate(problem.chunk(rows), start=start):
            order = np.argsort(distances, kind="stable")
            ranked_ids = problem.gallery_ids[order]
            same_camera = problem.gallery_cams[order] == problem.query_cams[query]
            is_match = ranked_ids == problem.query_ids[query]
            keep = ~same_camera if separate_camera_set else ~(is_match & same_camera)
            ranked_ids, is_match = ranked_ids[keep], is_match[keep]
            if not is_match.any():
                continue
            n_valid += 1
            for _ in range(repeats):
                shown = _one_per_identity(ranked_ids, random_state) if single_gallery_shot else slice(None)
                _add_match_ranks(hits, is_match[shown], 1.0 / repeats, first_match_break)
    return hits, n_valid


def _one_per_identity(ranked_ids: np.ndarray, random_state: np.random.RandomState) -> np.ndarray:
    """A mask keeping one uniformly drawn position per identity of a ranking."""
    order = np.lexsort((random_state.random_sample(len(ranked_ids)), ranked_ids))
    grouped = ranked_ids[order]
    starts_identity = np.r_[True, grouped[1:] != grouped[:-1]]
    chosen = np.zeros(len(ranked_ids), bool)
    chosen[order[starts_identity]] = True
    return chosen


def _add_match_ranks(hits: np.ndarray, is_match: np.ndarray, weight: float, first_match_break: bool) -> None:
    match_position = np.flatnonzero(is_match)
    # A match's rank is the number of non-matches ranked before it, as in open-reid.
    rank = match_position - np.arange(len(match_position))
    if first_match_break:
        rank, share = rank[:1], weight
    else:
        share = weight / len(rank)
    rank = rank[rank < len(hits)]
    np.add.at(hits, rank, share)
