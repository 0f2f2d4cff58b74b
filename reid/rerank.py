"""k-reciprocal Jaccard distances for self-similarity grouping.

Implements the source-aware k-reciprocal distance of SSG (Fu et al., "Self-similarity Grouping: A Simple
Unsupervised Cross Domain Adaptation Approach for Person Re-identification", ICCV 2019; docs/algorithm.md,
grouping step 2) and the query/gallery k-reciprocal re-ranking of Zhong et al. (CVPR 2017) that SSG++ uses to
propagate its one-shot labels (docs/algorithm.md, "SSG++") and every ``--rerank`` evaluation reports.

Both give the numbers of the authors' dense code without ever forming an N x N matrix: only the first
k1 + 1 neighbours of each image are kept (chunked Gram products reduced by ``torch.topk`` along their rows
and, for their columns, by merging the few entries that beat a row's current k-th neighbour), the
k-reciprocal encodings V are sparse rows, and the Jaccard numerator ``sum_k min(V_ik, V_jk)`` is
accumulated only over the pairs whose encodings share support. Memory grows with N * k1 (the dense outputs,
N x N of ``re_ranking`` and Q x G of ``re_ranking_query_gallery``, aside) and the work is dominated by the
matrix products (the upper half of the Gram matrix, and target-source or query-gallery); everything runs in
float32 on the device of the input features.

With ``distributed=True`` every rank of the default process group (torchrun: one per GPU) computes a share of
that work and the collectives of :mod:`reid.utils.distributed` put the shares together: the Gram matrix's
upper-half tiles, the target-source products and the row-wise steps (k-reciprocal encoding, query expansion,
Jaccard rows) are split by the single process's own blocks of rows, so each block is the same computation on
the same shapes. The result equals one process's bit for bit on the same kernels and thread count, but where
equal similarities straddle an image's k-th neighbour (which of them stays is the top-k's choice, in one process
too) and on CUDA, where index_add_'s atomic sums vary from run to run in one process already.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple, Union

import numpy as np
import scipy.sparse
import torch

from reid.utils.distributed import all_gather_uneven, all_reduce_min, broadcast_rows, gather_uneven, rank, world_size
from reid.utils.errors import UserError

Features = Union[np.ndarray, torch.Tensor]

# Elements one working block may hold (64 MB of float32): blocks of rows are sized by it.
_BLOCK_ELEMENTS = 1 << 24
# Memory of one emitted (i, j, min) term of the Jaccard numerator, in float32 elements.
_EMIT_COST = 8
_UNIT_NORM_TOLERANCE = 1e-3


def re_ranking(source_features: Features | None, target_features: Features, k1: int = 20, k2: int = 6,
               lambda_value: float = 0.1, sparse: bool = False, distributed: bool = False
               ) -> np.ndarray | scipy.sparse.csr_matrix | None:
    """Source-aware k-reciprocal distance between the target images of one feature type (SSG, step 2).

    ``D = (1 - lambda) * J + lambda * (a_i + a_j)`` where J is the Jaccard distance of the k-reciprocal
    encodings (after local query expansion) and ``a_i = min_m (1 - exp(-||t_i - s_m||^2))``, divided by its
    maximum, is how far target image i lies from the source domain.

    Parameters
    ----------
    source_features : ndarray or Tensor of shape (M, C), or None
        L2-normalised source features; unused (and may be None) when ``lambda_value`` is 0.
    target_features : ndarray or Tensor of shape (N, C)
        L2-normalised target features. The work runs on their device (CUDA for CUDA tensors).
    k1, k2 : int
        Size of the k-reciprocal neighbourhood and of the local query expansion (k2 = 1: none).
    lambda_value : float
        Weight of the source term, in [0, 1].
    sparse : bool
        Return the sparse form instead of the dense matrix.
    distributed : bool
        Split the work across the ranks of the default process group, each on the device of its features; every
        rank must call with the same features (all of them) and options. Without a process group of several
        ranks, the same as False.

    Returns
    -------
    ndarray of shape (N, N), float32, or scipy.sparse.csr_matrix, or None
        None on the ranks other than 0 under ``distributed``. The sparse form (float32) stores the whole diagonal
        and every pair whose encodings share support (J < 1), with exactly the dense values. Every omitted pair has
        J = 1, so its distance is ``(1 - lambda) + lambda * (a_i + a_j) >= 1 - lambda``: DBSCAN with eps below that
        sees the same neighbourhoods. The omitted values can be rebuilt bit for bit: in float32, ``s = lambda * a``
        and ``D_ij = (1 - lambda) * J_ij + (s_i + s_j)``; J_ii = 0, so the diagonal holds exactly ``2 s_i``, and max
        a = 1, so ``lambda = max_i s_i``. ``reid.cluster`` relies on this.

    Raises
    ------
    UserError
        When k1, k2 or lambda_value is out of range.
    ValueError
        When the features are not 2-D L2-normalised rows of one width, or every target image coincides
        with a source image (the source term is then 0 / 0).
    """
    _check_options(k1, k2, lambda_value)
    split = _Split(distributed)
    target = _unit_rows(target_features, "target_features")
    num = target.shape[0]
    weight = torch.tensor(lambda_value, dtype=torch.float32, device=target.device)
    if lambda_value > 0:
        if source_features is None:
            raise ValueError("re_ranking: source_features are needed when lambda_value > 0")
        source = _unit_rows(source_features, "source_features", target.device)
        shift = weight * _source_spread(source, target, split)
    else:
        shift = torch.zeros(num, device=target.device)
    jaccard_weight = 1 - weight
    encoding = _encode(_Union(target), k1, k2, split)
    rows = _final_rows(encoding.v, shift, jaccard_weight, split)
    if rows is None:
        return None
    indptr, indices, values = rows
    if sparse:
        return scipy.sparse.csr_matrix((values.cpu().numpy(), indices.cpu().numpy(), indptr.cpu().numpy()),
                                       shape=(num, num))
    dense = jaccard_weight + (shift[:, None] + shift[None, :])  # J = 1, as every pair left out
    rows = torch.repeat_interleave(torch.arange(num, device=target.device), indptr.diff())
    dense[rows, indices] = values
    return dense.cpu().numpy()


def re_ranking_query_gallery(query_features: Features, gallery_features: Features, k1: int = 20, k2: int = 6,
                             lambda_value: float = 0.3, distances: Features | None = None, distributed: bool = False
                             ) -> np.ndarray | torch.Tensor:
    """k-reciprocal re-ranking of a query set against a gallery (Zhong et al. 2017): SSG++'s label
    propagation and the ``--rerank`` evaluation.

    The base distance on the union of both sets is ``2 - 2 cos`` (the squared Euclidean distance of unit
    rows), each row divided by its maximum; k-reciprocal sets, encodings and local query expansion are taken
    over the union, exactly as in :func:`re_ranking`. The union is never copied into one matrix and its
    Gram matrix is computed by halves (query x query and gallery x gallery above the diagonal); the query x
    gallery block is the one matrix of size Q x G, computed once or given.

    Parameters
    ----------
    query_features : ndarray or Tensor of shape (Q, C)
        L2-normalised features of the queries (SSG++: the unlabelled set U). The work runs on their device.
    gallery_features : ndarray or Tensor of shape (G, C)
        L2-normalised features of the gallery (SSG++: the labelled set L).
    k1, k2 : int
        Size of the k-reciprocal neighbourhood and of the local query expansion (k2 = 1: none).
    lambda_value : float
        Weight of the normalised base distance, in [0, 1].
    distances : ndarray or Tensor of shape (Q, G), optional
        Squared Euclidean distances between the query and gallery rows that the caller already holds (an
        evaluation's distance matrix). They replace the Q x G product and are **overwritten with the result**,
        block by block, so that no second Q x G matrix is ever allocated. They may live on another device
        than the features (blocks are moved as needed).
    distributed : bool
        Split the work across the ranks of the default process group, as :func:`re_ranking` does; each rank
        computes its share of the query rows and receives the others'. Every rank must call with the same
        arguments.

    Returns
    -------
    ndarray of shape (Q, G), float32, or the ``distances`` given
        ``(1 - lambda) * J + lambda * d_norm`` for every query/gallery pair, on every rank.

    Raises
    ------
    UserError
        When k1, k2 or lambda_value is out of range.
    ValueError
        When the features are not 2-D L2-normalised rows of one width, or ``distances`` has another shape.
    """
    _check_options(k1, k2, lambda_value)
    query = _unit_rows(query_features, "query_features")
    gallery = _unit_rows(gallery_features, "gallery_features", query.device)
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(f"re_ranking_query_gallery: query width {query.shape[1]} != gallery width "
                         f"{gallery.shape[1]}")
    split = _Split(distributed)
    given = distances
    cross = _squared_distances(query, gallery, split) if given is None else torch.as_tensor(given)
    if cross.shape != (query.shape[0], gallery.shape[0]):
        raise ValueError(f"re_ranking_query_gallery: distances of shape {tuple(cross.shape)}, expected "
                         f"{(query.shape[0], gallery.shape[0])}")
    num_query = query.shape[0]
    encoding = _encode(_Union(query, gallery, cross), k1, k2, split)
    gallery_columns = _transpose(encoding.v, first_row=num_query)
    emits = _emit_counts(encoding.v, gallery_columns)[:num_query]
    cost = gallery.shape[0] + _EMIT_COST * emits
    chunks = _cost_chunks(cost)
    costs = _chunk_costs(cost, chunks)
    mine = split.mine(chunks, costs)
    buffer = _mass_buffer(mine, gallery.shape[0], query.device)
    for start, stop in mine:
        jaccard = _jaccard(_shared_mass(encoding.v, gallery_columns, start, stop, buffer))
        base = cross[start:stop].to(query.device, torch.float32) / encoding.row_max[start:stop, None]
        cross[start:stop] = ((1 - lambda_value) * jaccard + lambda_value * base).to(cross.device, cross.dtype)
    if split.size > 1:
        broadcast_rows(cross, split.bounds(chunks, costs), _rows_per_block(gallery.shape[0]))
    return cross.cpu().numpy() if given is None else given


class _Rows(NamedTuple):
    """A sparse matrix in compressed-row form, as torch tensors on the working device."""

    indptr: torch.Tensor  # (num_rows + 1,) int64
    indices: torch.Tensor  # column of every entry, int64
    values: torch.Tensor  # float32
    num_cols: int

    @property
    def num_rows(self) -> int:
        return self.indptr.numel() - 1


class _Neighbours(NamedTuple):
    """The first k of rank_i for every image, ordered by (distance, index)."""

    index: torch.Tensor  # (N, k) int64
    distance: torch.Tensor  # (N, k) normalised distance d[i, j] / max_j' d[i, j']
    row_max: torch.Tensor  # (N,) max_j d[i, j]


class _Encoding(NamedTuple):
    """What the distances need of the k-reciprocal machinery."""

    v: _Rows  # k-reciprocal encodings after local query expansion
    row_max: torch.Tensor  # scale of each row of the normalised distance


class _Union:
    """Unit rows ``first`` then ``second``, addressed as one matrix without copying them together.

    ``cross`` holds the squared distances between the rows of ``first`` and ``second`` (the query x gallery
    block): it is read, never recomputed, wherever the Gram matrix of the union needs that block.
    """

    def __init__(self, first: torch.Tensor, second: torch.Tensor | None = None,
                 cross: torch.Tensor | None = None):
        self.first, self.second, self.cross = first, second, cross
        self.split = first.shape[0]
        self.num = self.split + (0 if second is None else second.shape[0])
        self.device = first.device

    def row_chunks(self) -> list[tuple[int, int]]:
        """Blocks of rows, none straddling the two parts."""
        chunks = _even_chunks(self.split, self.num)
        if self.second is not None:
            chunks += [(start + self.split, stop + self.split)
                       for start, stop in _even_chunks(self.num - self.split, self.num)]
        return chunks

    def tile_cost(self, start: int, stop: int) -> int:
        """The work of :meth:`tiles` for rows start..stop: a multiply-add per product entry and feature, one step
        per entry of the given cross block (read, not computed)."""
        rows, width = stop - start, self.first.shape[1]
        if start >= self.split:
            return rows * (self.num - start) * width
        return rows * (self.split - start) * width + rows * (self.num - self.split)

    def tiles(self, start: int, stop: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Similarities of rows start..stop with every row from start on, as (first column, tile) pairs."""
        if start >= self.split:
            rows = self.second[start - self.split: stop - self.split]
            yield start, rows @ self.second[start - self.split:].T
            return
        yield start, self.first[start:stop] @ self.first[start:].T
        if self.second is not None:
            # ||q - g||^2 = 2 - 2 q.g for unit rows
            yield self.split, self.cross[start:stop].to(self.device, torch.float32, copy=True).mul_(-0.5).add_(1)

    def dots(self, image: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """``x_image[p] . x_other[p]`` for pairs of union rows.

        Pairs are taken a block at a time and by the parts their two rows lie in, so that each row is gathered
        once, straight from its part, and the gathered rows stay within one block.
        """
        result = torch.empty(image.numel(), device=self.device)
        parts = (self.first,) if self.second is None else (self.first, self.second)
        for start, stop in _even_chunks(image.numel(), self.first.shape[1]):
            pair_image, pair_other = image[start:stop], other[start:stop]
            image_part, other_part = pair_image >= self.split, pair_other >= self.split
            for image_in, image_rows in enumerate(parts):
                for other_in, other_rows in enumerate(parts):
                    pairs = ((image_part == image_in) & (other_part == other_in)).nonzero().squeeze(1)
                    result[start + pairs] = torch.linalg.vecdot(
                        image_rows[pair_image[pairs] - image_in * self.split],
                        other_rows[pair_other[pairs] - other_in * self.split])
        return result


class _Split:
    """Which of the single process's blocks of rows this process computes: all of them, or under ``distributed``
    its share, a run of consecutive blocks; the runs follow each other in rank order and balance the blocks'
    costs over the ranks. A block is computed alike in either case (same rows, same operations, same shapes)."""

    def __init__(self, distributed: bool):
        self.size = world_size() if distributed else 1
        self.rank = rank() if self.size > 1 else 0

    def owners(self, costs: Sequence[float]) -> np.ndarray:
        """The rank of each block: the one whose 1/size of the total cost holds the block's middle."""
        cost = np.asarray(costs, dtype=np.float64)
        middle = np.cumsum(cost) - cost / 2
        return np.minimum((middle * self.size / cost.sum()).astype(np.int64), self.size - 1)

    def mine(self, chunks: list[tuple[int, int]], costs: Sequence[float] | None = None) -> list[tuple[int, int]]:
        """This process's blocks (costs default to the blocks' rows)."""
        if self.size == 1:
            return chunks
        owners = self.owners(costs if costs is not None else [stop - start for start, stop in chunks])
        return [chunk for chunk, owner in zip(chunks, owners) if owner == self.rank]

    def bounds(self, chunks: list[tuple[int, int]], costs: Sequence[float] | None = None) -> list[int]:
        """Rank r's rows are ``bounds[r]:bounds[r + 1]`` (the blocks cover their rows in order)."""
        owners = self.owners(costs if costs is not None else [stop - start for start, stop in chunks])
        stops = np.array([stop for _, stop in chunks])
        first = chunks[0][0]
        return [first] + [int(stops[owners <= r].max(initial=first)) for r in range(self.size)]


def _check_options(k1: int, k2: int, lambda_value: float) -> None:
    for name, value in (("k1", k1), ("k2", k2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise UserError(f"{name}: expected a positive integer, got {value!r}")
    if not 0 <= lambda_value <= 1:
        raise UserError(f"lambda_value: expected a number in [0, 1], got {lambda_value!r}")


def _unit_rows(features: Features, name: str, device: torch.device | None = None) -> torch.Tensor:
    tensor = torch.as_tensor(features).detach().to(device=device, dtype=torch.float32)
    if tensor.dim() != 2 or tensor.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D array, got shape {tuple(tensor.shape)}")
    norm_error = (tensor.norm(dim=1) - 1).abs().max().item()
    if norm_error > _UNIT_NORM_TOLERANCE:
        raise ValueError(f"{name}: rows must be L2-normalised (a norm is off by {norm_error:.3g})")
    return tensor


def _squared_distances(query: torch.Tensor, gallery: torch.Tensor, split: _Split) -> torch.Tensor:
    """``2 - 2 q.g`` (clamped at 0) between unit rows, (Q, G), in row blocks."""
    result = torch.empty(query.shape[0], gallery.shape[0], device=query.device)
    chunks = _even_chunks(query.shape[0], gallery.shape[0])
    for start, stop in split.mine(chunks):
        result[start:stop] = (2 - 2 * query[start:stop] @ gallery.T).clamp_(min=0)
    if split.size > 1:
        broadcast_rows(result, split.bounds(chunks), _rows_per_block(gallery.shape[0]))
    return result


def _rows_per_block(width: int) -> int:
    return max(1, _BLOCK_ELEMENTS // max(width, 1))


def _even_chunks(num_rows: int, width: int) -> list[tuple[int, int]]:
    step = _rows_per_block(width)
    return [(start, min(start + step, num_rows)) for start in range(0, num_rows, step)]


def _cost_chunks(cost: torch.Tensor) -> list[tuple[int, int]]:
    """Consecutive row ranges whose summed cost stays within one block (at least one row each)."""
    ends = torch.cumsum(cost.cpu(), 0)
    chunks, start, spent = [], 0, 0
    while start < ends.numel():
        stop = int(torch.searchsorted(ends, spent + _BLOCK_ELEMENTS, right=True))
        stop = max(stop, start + 1)
        chunks.append((start, stop))
        spent, start = int(ends[stop - 1]), stop
    return chunks


def _chunk_costs(cost: torch.Tensor, chunks: list[tuple[int, int]]) -> list[float]:
    """The summed cost of each row range."""
    ends = torch.cumsum(cost.cpu(), 0).tolist()
    return [ends[stop - 1] - (ends[start - 1] if start else 0) for start, stop in chunks]


def _joined(pieces: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], device: torch.device, split: _Split,
            everywhere: bool = True) -> list[torch.Tensor] | None:
    """The pieces' three parts (int64, int64, float32: rows or counts, columns, values), each concatenated; under a
    split, with the other ranks' in rank order, on every rank or (``everywhere`` False) on rank 0 alone, None
    elsewhere."""
    if pieces:
        parts = [torch.cat(part) for part in zip(*pieces)]
    else:  # no block fell to this rank
        parts = [torch.empty(0, dtype=dtype, device=device) for dtype in (torch.int64, torch.int64, torch.float32)]
    if split.size == 1:
        return parts
    if everywhere:
        return [torch.cat(all_gather_uneven(part)) for part in parts]
    gathered = [gather_uneven(part) for part in parts]
    return None if gathered[0] is None else [torch.cat(part) for part in gathered]


def _rows_from_sorted(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, num_rows: int,
                      num_cols: int) -> _Rows:
    """Compressed rows from entries already ordered by row."""
    indptr = torch.zeros(num_rows + 1, dtype=torch.int64, device=rows.device)
    indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=num_rows), 0)
    return _Rows(indptr, cols, values, num_cols)


def _row_of_entries(matrix: _Rows) -> torch.Tensor:
    rows = torch.arange(matrix.num_rows, device=matrix.indptr.device)
    return torch.repeat_interleave(rows, matrix.indptr.diff())


def _transpose(matrix: _Rows, first_row: int = 0) -> _Rows:
    """The transpose of ``matrix[first_row:]``: one row per column k, holding (i - first_row, value)."""
    rows = _row_of_entries(matrix)
    keep = rows >= first_row
    rows, cols, values = rows[keep] - first_row, matrix.indices[keep], matrix.values[keep]
    order = torch.argsort(cols, stable=True)
    return _rows_from_sorted(cols[order], rows[order], values[order], matrix.num_cols,
                             matrix.num_rows - first_row)


def _segments(indptr: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every entry of the requested rows: its position in the entry arrays and which request it answers."""
    starts = indptr[rows]
    counts = indptr[rows + 1] - starts
    owner = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), counts)
    offset_in_row = torch.arange(owner.numel(), device=rows.device) - (torch.cumsum(counts, 0) - counts)[owner]
    return owner, starts[owner] + offset_in_row


def _source_spread(source: torch.Tensor, target: torch.Tensor, split: _Split) -> torch.Tensor:
    """``a_i = min_m (1 - exp(-||t_i - s_m||^2)) / max_i (...)``: needs only each target's nearest source."""
    if source.shape[1] != target.shape[1]:
        raise ValueError(f"re_ranking: source width {source.shape[1]} != target width {target.shape[1]}")
    best = [(target[start:stop] @ source.T).amax(dim=1)
            for start, stop in split.mine(_even_chunks(target.shape[0], source.shape[0]))]
    best_similarity = torch.cat(best) if best else torch.empty(0, device=target.device)
    if split.size > 1:
        best_similarity = torch.cat(all_gather_uneven(best_similarity))
    spread = -torch.expm1(-(2 - 2 * best_similarity).clamp_(min=0))
    largest = spread.max()
    if largest <= 0:
        raise ValueError("re_ranking: every target image coincides with a source image, the source term "
                         "a / max(a) is undefined")
    return spread / largest


def _nearest_neighbours(union: _Union, k: int, split: _Split) -> _Neighbours:
    """The first k of rank_i and max_j d[i, j] for every row, from the upper half of the Gram matrix.

    Block I of rows is multiplied by rows I onwards only; each tile's transpose updates the later rows, so
    each similarity is computed (or read, for the given cross block) once and the row maxima come from the
    same pass. The list is ordered by (distance, index); should equal distances straddle the k-th place,
    topk decides which stays.

    Under a split each rank multiplies its blocks of rows, balanced by their tiles' work, keeping lists for
    every row; the lists are then merged (:func:`_merge_lists`) and the row maxima reduced.
    """
    num = union.num
    k = min(k, num)
    best_similarity = torch.full((num, k), -torch.inf, device=union.device)
    best_index = torch.zeros((num, k), dtype=torch.int64, device=union.device)
    least_similarity = torch.full((num,), torch.inf, device=union.device)
    chunks = union.row_chunks()
    for start, stop in split.mine(chunks, [union.tile_cost(start, stop) for start, stop in chunks]):
        for first_col, similarity in union.tiles(start, stop):
            if first_col == start:
                similarity.diagonal().fill_(1.0)  # ||t_i - t_i||^2 is exactly 0
            top = similarity.topk(min(k, similarity.shape[1]), dim=1)
            _keep_most_similar(best_similarity, best_index, slice(start, stop), top.values, top.indices + first_col)
            least_similarity[start:stop] = torch.minimum(least_similarity[start:stop], similarity.amin(dim=1))
            first_later = max(stop, first_col)
            later = similarity[:, first_later - first_col:]  # its columns are later rows
            if later.shape[1]:
                _offer_columns(best_similarity, best_index, first_later, later, start)
                cols = slice(first_later, first_later + later.shape[1])
                least_similarity[cols] = torch.minimum(least_similarity[cols], later.amin(dim=0))
    if split.size > 1:
        _merge_lists(best_similarity, best_index)
        least_similarity = all_reduce_min(least_similarity)
    distance = (2 - 2 * best_similarity).clamp_(min=0)
    by_index = torch.argsort(best_index, dim=1, stable=True)  # then a stable sort: ties go to the smaller index
    best_index, distance = best_index.gather(1, by_index), distance.gather(1, by_index)
    by_distance = torch.argsort(distance, dim=1, stable=True)
    best_index, distance = best_index.gather(1, by_distance), distance.gather(1, by_distance)
    row_max = (2 - 2 * least_similarity).clamp_(min=torch.finfo(torch.float32).tiny)
    return _Neighbours(best_index, distance / row_max[:, None], row_max)


def _merge_lists(best_similarity: torch.Tensor, best_index: torch.Tensor) -> None:
    """Every rank's running top k of every row merged into the top k over all ranks, in place, on every rank.

    Each similarity was computed by one rank alone (the rank of its tile), so the merged lists hold the top k of
    the very candidates one process weighs; a rank's unfilled places (-inf) never reach the top k.
    """
    num, k = best_similarity.shape
    for start, stop in _even_chunks(num, k * world_size()):
        similarity = torch.cat(all_gather_uneven(best_similarity[start:stop]), dim=1)
        index = torch.cat(all_gather_uneven(best_index[start:stop]), dim=1)
        kept = similarity.topk(k, dim=1)
        best_similarity[start:stop] = kept.values
        best_index[start:stop] = index.gather(1, kept.indices)


def _offer_columns(best_similarity: torch.Tensor, best_index: torch.Tensor, first_row: int, tile: torch.Tensor,
                   first_index: int) -> None:
    """Offer column c of ``tile`` to the running top k of row ``first_row + c``, entry r as image
    ``first_index + r``.

    Once a row's list is full only entries above its k-th best can enter, and after the first block of rows
    those are a few per cent: they alone are gathered (padded per row to the longest) and merged. A top-k
    along the tile's columns, whose strided reads cost a good part of the product that made the tile, is
    left to the first block, where the lists are still filling up.
    """
    rows_offered = slice(first_row, first_row + tile.shape[1])
    threshold = best_similarity[rows_offered, -1]
    if torch.isneginf(threshold).any():
        top = tile.topk(min(best_similarity.shape[1], tile.shape[0]), dim=0)
        _keep_most_similar(best_similarity, best_index, rows_offered, top.values.T, top.indices.T + first_index)
        return
    entry, column = (tile > threshold).nonzero(as_tuple=True)
    if column.numel() == 0:
        return
    by_column = torch.argsort(column, stable=True)
    entry, column = entry[by_column], column[by_column]
    columns, counts = torch.unique_consecutive(column, return_counts=True)
    owner = torch.repeat_interleave(torch.arange(columns.numel(), device=tile.device), counts)
    slot = torch.arange(column.numel(), device=tile.device) - (torch.cumsum(counts, 0) - counts)[owner]
    values = torch.full((columns.numel(), int(counts.max())), -torch.inf, device=tile.device)
    index = torch.zeros(values.shape, dtype=torch.int64, device=tile.device)
    values[owner, slot] = tile[entry, column]
    index[owner, slot] = entry + first_index
    _keep_most_similar(best_similarity, best_index, columns + first_row, values, index)


def _keep_most_similar(best_similarity: torch.Tensor, best_index: torch.Tensor, rows: slice | torch.Tensor,
                       similarity: torch.Tensor, index: torch.Tensor) -> None:
    """Merge candidate similarities (and their column indices) of ``rows`` into the running top k."""
    candidates = torch.cat([best_similarity[rows], similarity], dim=1)
    candidate_index = torch.cat([best_index[rows], index], dim=1)
    kept = candidates.topk(best_similarity.shape[1], dim=1)
    best_similarity[rows] = kept.values
    best_index[rows] = candidate_index.gather(1, kept.indices)


def _encode(union: _Union, k1: int, k2: int, split: _Split) -> _Encoding:
    neighbours = _nearest_neighbours(union, max(k1 + 1, k2), split)
    v = _reciprocal_encoding(union, neighbours, k1, split)
    return _Encoding(_query_expansion(v, neighbours.index, k2, split), neighbours.row_max)


def _reciprocal_mask(index: torch.Tensor, k: int) -> torch.Tensor:
    """``mask[i, p]``: index[i, p] is in R(i, k), i.e. i is also among the first k + 1 of its own rank."""
    head = index[:, : k + 1]
    num, width = head.shape
    mask = torch.empty((num, width), dtype=torch.bool, device=index.device)
    for start, stop in _even_chunks(num, width * width):
        own = torch.arange(start, stop, device=index.device)[:, None, None]
        mask[start:stop] = (head[head[start:stop]] == own).any(dim=2)
    return mask


def _reciprocal_encoding(union: _Union, neighbours: _Neighbours, k1: int, split: _Split) -> _Rows:
    """V: ``exp(-d[i, j])`` over the expanded k-reciprocal set R*(i), normalised to sum 1 per row; under a split,
    each rank its share of the rows, then every rank all of them."""
    num = union.num
    half = int(np.round(k1 / 2))  # numpy's half-to-even rounding, as the released code
    head, head_ok = neighbours.index[:, : k1 + 1], _reciprocal_mask(neighbours.index, k1)
    half_head, half_ok = neighbours.index[:, : half + 1], _reciprocal_mask(neighbours.index, half)
    half_size = half_ok.sum(dim=1)
    pieces = []
    for start, stop in split.mine(_even_chunks(num, head.shape[1] ** 2 * half_head.shape[1])):
        members = _expanded_sets(head[start:stop], head_ok[start:stop], half_head, half_ok, half_size, num)
        rows, position = (members < num).nonzero(as_tuple=True)
        cols = members[rows, position]
        weight = torch.exp(-_member_distances(union, neighbours, start, rows, cols))
        row_sum = torch.zeros(stop - start, device=union.device).index_add_(0, rows, weight)
        pieces.append((rows + start, cols, weight / row_sum[rows]))
    rows, cols, values = _joined(pieces, union.device, split)
    return _rows_from_sorted(rows, cols, values, num, num)


def _expanded_sets(head: torch.Tensor, head_ok: torch.Tensor, half_head: torch.Tensor, half_ok: torch.Tensor,
                   half_size: torch.Tensor, num: int) -> torch.Tensor:
    """R*(i) for a block of rows: each row's members in increasing order, padded with ``num``.

    R(c, k1/2) of a candidate c in R(i, k1) joins when more than 2/3 of it already lies in R(i, k1)
    (``3 * overlap > 2 * size`` is the released float test ``overlap > 2/3 * size`` in integers).
    """
    block = head.shape[0]
    candidate_sets, candidate_ok = half_head[head], half_ok[head]  # (block, k1 + 1, half + 1)
    in_set = (candidate_sets[..., None] == head[:, None, None, :]) & head_ok[:, None, None, :]
    overlap = (in_set.any(dim=3) & candidate_ok).sum(dim=2)
    accepted = head_ok & (3 * overlap > 2 * half_size[head])
    joining = candidate_ok & accepted[..., None]
    members = torch.cat([torch.where(head_ok, head, num),
                         torch.where(joining, candidate_sets, num).view(block, -1)], dim=1)
    members = members.sort(dim=1).values
    members[:, 1:][members[:, 1:] == members[:, :-1]] = num  # "made unique"
    return members


def _member_distances(union: _Union, neighbours: _Neighbours, start: int, rows: torch.Tensor,
                      cols: torch.Tensor) -> torch.Tensor:
    """Normalised d[i, j] for i = start + rows: from the neighbour lists, else one dot product each."""
    listed, order = neighbours.index[start + rows].sort(dim=1)
    position = torch.searchsorted(listed, cols[:, None]).clamp_(max=listed.shape[1] - 1)
    found = listed.gather(1, position).squeeze(1) == cols
    distance = neighbours.distance[start + rows].gather(1, order.gather(1, position)).squeeze(1)
    image, other = rows[~found] + start, cols[~found]
    squared = (2 - 2 * union.dots(image, other)).clamp_(min=0)
    distance[~found] = squared / neighbours.row_max[image]
    return distance


def _query_expansion(v: _Rows, index: torch.Tensor, k2: int, split: _Split) -> _Rows:
    """``V_i <- mean of V_r over the first k2 of rank_i``; k2 = 1 keeps V, as the released code. Under a split, as
    :func:`_reciprocal_encoding`."""
    if k2 == 1:
        return v
    heads = index[:, :k2]
    count = heads.shape[1]
    pieces = []
    cost = _EMIT_COST * v.indptr.diff()[heads].sum(dim=1)
    chunks = _cost_chunks(cost)
    for start, stop in split.mine(chunks, _chunk_costs(cost, chunks)):
        owner, position = _segments(v.indptr, heads[start:stop].flatten())
        rows, cols, total = _sum_duplicates(owner // count, v.indices[position], v.values[position], v.num_cols)
        pieces.append((rows + start, cols, total / count))
    rows, cols, values = _joined(pieces, v.values.device, split)
    return _rows_from_sorted(rows, cols, values, v.num_rows, v.num_cols)


def _sum_duplicates(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, num_cols: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One entry per distinct (row, col), values summed, ordered by row then column."""
    keys, slot = torch.unique(rows * num_cols + cols, return_inverse=True)
    total = torch.zeros(keys.numel(), dtype=values.dtype, device=values.device).index_add_(0, slot, values)
    return keys // num_cols, keys % num_cols, total


def _emit_counts(v: _Rows, columns: _Rows) -> torch.Tensor:
    """Terms each row of V emits into the Jaccard numerator: sum over its support of the column's size."""
    per_entry = columns.indptr.diff()[v.indices]
    return torch.zeros(v.num_rows, dtype=torch.int64, device=v.indices.device).index_add_(
        0, _row_of_entries(v), per_entry)


def _shared_mass(v: _Rows, columns: _Rows, start: int, stop: int, buffer: torch.Tensor) -> torch.Tensor:
    """``m[i, j] = sum_k min(V_ik, V_jk)`` for rows start..stop of V and every row j held in ``columns``.

    For each non-zero V_ik the column k's non-zeros V_jk are visited, so only pairs sharing support cost.
    The dense (stop - start, columns.num_cols) result is a view of ``buffer``, reused between blocks.
    """
    owner, position = _segments(v.indptr, torch.arange(start, stop, device=v.indptr.device))
    shared_owner, shared_position = _segments(columns.indptr, v.indices[position])
    smaller = torch.minimum(v.values[position][shared_owner], columns.values[shared_position])
    mass = buffer[: (stop - start) * columns.num_cols].zero_()
    mass.index_add_(0, owner[shared_owner] * columns.num_cols + columns.indices[shared_position], smaller)
    return mass.view(stop - start, columns.num_cols)


def _mass_buffer(chunks: list[tuple[int, int]], num_cols: int, device: torch.device) -> torch.Tensor:
    largest = max((stop - start for start, stop in chunks), default=0)
    return torch.empty(largest * num_cols, device=device)


def _jaccard(mass: torch.Tensor) -> torch.Tensor:
    """``1 - m / (2 - m)``, clipped at 0 against rounding as the released code."""
    return (1 - mass / (2 - mass)).clamp_(min=0)


def _final_rows(v: _Rows, shift: torch.Tensor, jaccard_weight: torch.Tensor, split: _Split
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Compressed rows (indptr, indices, values) of ``D = jaccard_weight * J + (shift_i + shift_j)`` over
    the diagonal and the pairs with J < 1. J_ii is exactly 0 (m_ii = sum_k V_ik = 1), so D_ii = 2 shift_i.
    Under a split each rank computes its share of the rows and rank 0 gathers them (None elsewhere)."""
    num = v.num_rows
    columns = _transpose(v)
    cost = num + _EMIT_COST * _emit_counts(v, columns)
    chunks = _cost_chunks(cost)
    mine = split.mine(chunks, _chunk_costs(cost, chunks))
    buffer = _mass_buffer(mine, num, v.values.device)
    pieces = []
    for start, stop in mine:
        mass = _shared_mass(v, columns, start, stop, buffer)
        stored = mass != 0
        stored.diagonal(start).fill_(True)
        mass.diagonal(start).fill_(1.0)
        flat = stored.view(-1).nonzero().squeeze(1)
        rows, cols = flat // num + start, flat % num
        jaccard = _jaccard(mass.view(-1)[flat])
        pieces.append((torch.bincount(rows - start, minlength=stop - start), cols,
                       jaccard_weight * jaccard + (shift[rows] + shift[cols])))
    joined = _joined(pieces, v.values.device, split, everywhere=False)
    if joined is None:
        return None
    counts, indices, values = joined
    indptr = torch.zeros(num + 1, dtype=torch.int64, device=v.indices.device)
    indptr[1:] = torch.cumsum(counts, 0)
    return indptr, indices, values
