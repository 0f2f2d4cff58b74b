"""Grouping step of SSG (Fu et al., "Self-similarity Grouping", ICCV 2019; docs/algorithm.md, grouping steps 3-5).

From the k-reciprocal distance of each feature type (``reid.rerank.re_ranking``, dense or sparse): DBSCAN's
eps, frozen at the first iteration, and rho by the paper's rule; DBSCAN labels; and the pseudo-labelled set, the
images that no feature type calls an outlier (:class:`reid.grouping.Grouping` holds an iteration's grouping).
Both forms of the distance give the same eps and labels: where the smallest distances reach pairs the sparse
form omits, their values are rebuilt exactly from its diagonal. Only label arrays leave this module: fitted
DBSCAN objects hold a copy of the distance rows of every core sample (gigabytes on a dense matrix) and are never
kept.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Union

import numpy as np
import scipy.sparse
from sklearn.cluster import DBSCAN

from reid.paper import GROUPING
from reid.utils.errors import UserError

Distance = Union[np.ndarray, scipy.sparse.spmatrix]

# Rows of a dense distance matrix scanned at once by compute_eps (about 16 M entries).
_SCAN_ELEMENTS = 1 << 24

# The released rho and the target it was set on: Market-1501's training set, 12,936 images of 751 people.
RELEASED_RHO = GROUPING["rho"]
MARKET_IMAGES, MARKET_IDENTITIES = 12_936, 751
# rho as a multiple of the target's share of same-identity image pairs. N images of people seen E times each
# hold N (E - 1) / 2 such pairs among N (N - 1) / 2, a share of (E - 1) / (N - 1): 0.125% on Market-1501, and
# 1.6e-3 / 0.125% = 1.2756, rounded 1.28 (:func:`rho_by_rule`).
RHO_MULTIPLE = 1.28


def compute_eps(distance: Distance, rho: float = RELEASED_RHO) -> float:
    """DBSCAN's eps: the mean of the smallest ``round(rho * count)`` pairwise distances (step 3).

    The distances are the strictly-upper-triangular non-zero entries of D, ``count`` of them; the rounding
    is numpy's ``np.round``, half to even (``round(2.5) = 2``), as the released code.

    Parameters
    ----------
    distance : ndarray of shape (N, N) or scipy sparse matrix
        Dense D, or the sparse form of ``reid.rerank.re_ranking``, whose omitted entries are rebuilt from its
        diagonal (see there) when the smallest distances reach them.
    rho : float
        Fraction of the pairwise distances averaged, in (0, 1].

    Returns
    -------
    float
        The same value, bit for bit, for the dense matrix and its sparse form.

    Raises
    ------
    UserError
        When rho is outside (0, 1].
    ValueError
        When rho selects no distance, or the sparse form comes from lambda_value = 1 (its omitted entries
        may then be 0, which the count leaves out).
    """
    if not 0 < rho <= 1:
        raise UserError(f"rho: expected a number in (0, 1], got {rho!r}")
    if scipy.sparse.issparse(distance):
        smallest = _smallest_sparse(scipy.sparse.coo_matrix(distance), rho)
    else:
        smallest = _smallest_dense(np.asarray(distance), rho)
    return float(np.mean(np.sort(smallest).astype(np.float64)))


def _selected_count(rho: float, count: int) -> int:
    selected = int(np.round(rho * count))
    if selected == 0:
        raise UserError(f"--rho {rho} selects none of the {count} pairwise distances; use a larger --rho")
    return selected


def same_identity_share(images_per_identity: float, num_images: int) -> float:
    """The share of image pairs that show one person, ``(E - 1) / (N - 1)``, among ``num_images`` images of
    people seen ``images_per_identity`` times each."""
    return (images_per_identity - 1) / (num_images - 1)


def rho_by_rule(images_per_identity: float, num_images: int) -> float:
    """rho by the paper's rule: :data:`RHO_MULTIPLE` (1.28) times the target's share of same-identity pairs.

    The released 1.6e-3 is that multiple of Market-1501's share; a fixed rho implies another number of images
    per person on every other target size (see :func:`implied_images_per_identity`).

    Parameters
    ----------
    images_per_identity : float
        E, how many images of each person the target holds on average (Market-1501 17.2, DukeMTMC-reID 23.5);
        more than 1.
    num_images : int
        N, the target's training images; at least 2.

    Returns
    -------
    float
        ``1.28 x (E - 1) / (N - 1)``, in (0, 1]: Market-1501 1.6e-3, 1,376 images at 17.2 1.5e-2, 100,000 at
        17 2.0e-4.

    Raises
    ------
    UserError
        For E not above 1 (no two images of one person: nothing to group), N below 2, or a rho above 1 (E
        beyond ``1 + (N - 1) / 1.28``).
    """
    if num_images < 2:
        raise UserError(f"the target holds {num_images} image(s): grouping needs at least 2")
    if not (math.isfinite(images_per_identity) and images_per_identity > 1):
        raise UserError(f"--images-per-identity {images_per_identity:g}: expected more than 1 (how many images "
                        "of each person the target holds on average)")
    rho = RHO_MULTIPLE * same_identity_share(images_per_identity, num_images)
    if rho > 1:
        limit = 1 + (num_images - 1) / RHO_MULTIPLE
        raise UserError(f"--images-per-identity {images_per_identity:g}: expected at most {limit:.4g} for "
                        f"{num_images:,} images (rho {format_rho(rho)} would exceed 1)")
    return rho


def implied_images_per_identity(rho: float, num_images: int) -> float:
    """The images per person that ``rho`` stands for on ``num_images`` images by the paper's rule (the inverse
    of :func:`rho_by_rule`): ``1 + rho (N - 1) / 1.28``."""
    return 1 + rho * (num_images - 1) / RHO_MULTIPLE


AUTO_RHO = "auto"


def format_rho(rho: float) -> str:
    """rho to three significant figures as the papers write it: ``1.6e-3``, ``1.51e-2``."""
    mantissa, exponent = f"{rho:.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def rho_arg(text: str) -> float | str:
    """argparse ``type=`` of ``--rho``: a number in (0, 1], or ``auto`` (from ``--images-per-identity``)."""
    if text == AUTO_RHO:
        return AUTO_RHO
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] or {AUTO_RHO}, got {text!r}")
    return value


def resolve_rho(rho: float | str | None, images_per_identity: float | None, num_images: int) -> tuple[float, str]:
    """The rho a grouping uses and the log line that says why.

    Parameters
    ----------
    rho : float, "auto" or None
        ``--rho``: a number is used as given; ``auto`` takes it from ``images_per_identity``
        (:func:`rho_by_rule`); None (not given) does too when ``images_per_identity`` is given, else the
        released 1.6e-3.
    images_per_identity : float or None
        ``--images-per-identity``.
    num_images : int
        The target's training images.

    Returns
    -------
    rho : float
    line : str
        One line for the log: the value, where it comes from, and what it assumes of the target.

    Raises
    ------
    UserError
        For ``auto`` without ``images_per_identity``, a number given with it (two answers to one question), or
        a value :func:`rho_by_rule` refuses.
    """
    if rho == AUTO_RHO and images_per_identity is None:
        raise UserError(f"--rho {AUTO_RHO}: give --images-per-identity, how many images of each person the target "
                        "holds on average")
    if isinstance(rho, float) and images_per_identity is not None:
        raise UserError(f"--rho {rho:g} and --images-per-identity {images_per_identity:g}: give one of them (the "
                        "second sets rho by the paper's rule)")
    if images_per_identity is not None:
        value = rho_by_rule(images_per_identity, num_images)
        return value, (f"rho {format_rho(value)} by the paper's rule, {RHO_MULTIPLE} x (E - 1) / (N - 1) with "
                       f"{images_per_identity:g} images per person among N = {num_images:,}: the released "
                       f"{format_rho(RELEASED_RHO)} is {RHO_MULTIPLE} x Market-1501's share of same-identity pairs "
                       f"({MARKET_IMAGES:,} images of {MARKET_IDENTITIES} people)")
    value = RELEASED_RHO if rho is None else float(rho)
    implied = implied_images_per_identity(value, num_images)
    source = "the released value" if rho is None else "as given"
    return value, (f"rho {format_rho(value)}, {source}: by the paper's rule it assumes about {implied:.1f} images per "
                   f"person among these {num_images:,} (--images-per-identity sets rho from your own number)")


def _smallest_dense(distance: np.ndarray, rho: float) -> np.ndarray:
    num = distance.shape[0]
    step = max(1, _SCAN_ELEMENTS // max(num, 1))
    columns = np.arange(num)
    blocks = [(start, min(start + step, num)) for start in range(0, num, step)]

    def upper_nonzero(start: int, stop: int) -> np.ndarray:
        block = distance[start:stop]
        upper = columns[None, :] > np.arange(start, stop)[:, None]
        return block[upper & (block != 0)]

    selected = _selected_count(rho, sum(upper_nonzero(start, stop).size for start, stop in blocks))
    smallest = np.empty(0, dtype=distance.dtype)
    for start, stop in blocks:  # keep only the running smallest, never all N^2 / 2 values at once
        smallest = np.concatenate([smallest, upper_nonzero(start, stop)])
        if smallest.size > selected:
            smallest = np.partition(smallest, selected - 1)[:selected]
    return smallest


def _smallest_sparse(distance: scipy.sparse.coo_matrix, rho: float) -> np.ndarray:
    num = distance.shape[0]
    upper = distance.data[distance.row < distance.col]
    stored = upper[upper != 0]
    selected = _selected_count(rho, num * (num - 1) // 2 - (upper.size - stored.size))
    below_omitted = stored[stored < _omitted_floor(distance)]
    if below_omitted.size >= selected:  # the usual case: no omitted entry is among the smallest
        return np.partition(below_omitted, selected - 1)[:selected]
    candidates = np.concatenate([stored, _OmittedEntries(distance).smallest(selected)])
    return np.partition(candidates, selected - 1)[:selected]


def _shifts(distance: scipy.sparse.coo_matrix) -> tuple[np.ndarray, np.float32]:
    """``s_i`` and ``1 - lambda`` of the sparse form (see :class:`_OmittedEntries`)."""
    shift = (distance.diagonal() / 2).astype(np.float32)
    base = np.float32(1) - shift.max() if shift.size else np.float32(1)
    if base <= 0:
        raise ValueError("the sparse form of a lambda_value = 1 distance may omit zeros; use the dense form")
    return shift, base


def _omitted_floor(distance: scipy.sparse.coo_matrix) -> float:
    """A value no omitted entry lies below: the pair of the two smallest ``s_i`` (float32 sums are monotone).
    It spares building :class:`_OmittedEntries` (seconds at Market scale) when nothing reaches that far."""
    shift, base = _shifts(distance)
    if shift.size < 2:
        return np.inf
    first, second = np.partition(shift, 1)[:2]
    return float(base + (first + second))


class _OmittedEntries:
    """The upper entries the sparse form of ``re_ranking`` leaves out, rebuilt bit for bit from its diagonal.

    An omitted pair has J = 1, so ``D_ij = (1 - lambda) + (s_i + s_j)`` in float32, where the diagonal holds
    ``2 s_i`` exactly and ``lambda = max_i s_i``. The value grows with ``s_i + s_j``, so the smallest omitted
    entries are those of the pairs with the smallest sums: found by bisection on the sum, without visiting
    the N^2 / 2 pairs.
    """

    def __init__(self, distance: scipy.sparse.coo_matrix):
        self.num = distance.shape[0]
        self.shift, self.base = _shifts(distance)
        self.order = np.argsort(self.shift, kind="stable")
        self.sorted_shift = self.shift[self.order].astype(np.float64)  # sums of two are exact in float64
        rank = np.empty(self.num, dtype=np.int64)
        rank[self.order] = np.arange(self.num)
        upper = distance.row < distance.col
        first, second = rank[distance.row[upper]], rank[distance.col[upper]]
        self.stored_low, self.stored_high = np.minimum(first, second), np.maximum(first, second)
        self.stored_keys = np.sort(self.stored_low * self.num + self.stored_high)

    def smallest(self, count: int) -> np.ndarray:
        """The ``count`` smallest omitted values (all of them when fewer are omitted), float32."""
        top = 2 * self.sorted_shift[-1]
        if self._omitted_within(top) <= count:
            return self._omitted_values(top)
        below, reaching = self._bracket(count)
        values = self._omitted_values(below) if below >= 0 else np.empty(0, dtype=np.float32)
        # every omitted pair between the two limits has the sum `reaching`: no float64 lies in between
        tied = np.float32(self.base) + np.float32(reaching)
        return np.concatenate([values, np.full(count - values.size, tied, dtype=np.float32)])

    def _bracket(self, count: int) -> tuple[float, float]:
        """Adjacent float64 limits (as bit patterns, monotone for values >= 0), fewer than ``count`` omitted
        pairs having a sum up to the first and at least ``count`` up to the second; -1 for none."""
        below, reaching = -1, int(np.float64(2 * self.sorted_shift[-1]).view(np.int64))
        while reaching - below > 1:
            middle = (below + reaching) // 2
            if self._omitted_within(float(np.int64(middle).view(np.float64))) >= count:
                reaching = middle
            else:
                below = middle
        as_float = [float(np.int64(bits).view(np.float64)) if bits >= 0 else -1.0 for bits in (below, reaching)]
        return as_float[0], as_float[1]

    def _partner_ends(self, limit: float) -> np.ndarray:
        """For each position a of the sorted shifts, the end of the partners b with s_a + s_b <= limit."""
        return np.searchsorted(self.sorted_shift, limit - self.sorted_shift, side="right")

    def _omitted_within(self, limit: float) -> int:
        ends = self._partner_ends(limit)
        pairs = np.maximum(ends - np.arange(self.num) - 1, 0).sum()
        stored = (self.stored_high < ends[self.stored_low]).sum()
        return int(pairs - stored)

    def _omitted_values(self, limit: float) -> np.ndarray:
        partners = np.maximum(self._partner_ends(limit) - np.arange(self.num) - 1, 0)
        low = np.repeat(np.arange(self.num), partners)
        first_of_low = np.cumsum(partners) - partners
        high = low + 1 + np.arange(low.size) - first_of_low[low]
        if self.stored_keys.size:
            keys = low * self.num + high
            position = np.minimum(np.searchsorted(self.stored_keys, keys), self.stored_keys.size - 1)
            omitted = self.stored_keys[position] != keys
            low, high = low[omitted], high[omitted]
        return self.base + (self.shift[self.order[low]] + self.shift[self.order[high]])


def cluster_labels(distance: Distance, eps: float, min_samples: int = 4) -> np.ndarray:
    """DBSCAN on a precomputed distance (step 4); -1 marks outliers.

    Parameters
    ----------
    distance : ndarray of shape (N, N) or scipy sparse matrix
        Dense D or the sparse form of ``reid.rerank.re_ranking``; both give the same labels.
    eps : float
        Neighbourhood radius, > 0 (``compute_eps``); on the sparse form it must stay below every omitted
        entry (about 1 - lambda_value).
    min_samples : int
        Neighbours within eps that make a core sample; an image counts itself only when its own diagonal
        entry (``2 lambda a_i``, not 0) is within eps, as with the released dense matrix.

    Returns
    -------
    ndarray of shape (N,), int64
        Cluster ids 0..K-1, -1 for outliers.

    Raises
    ------
    UserError
        When min_samples is not a positive integer.
    ValueError
        When eps is not positive, or reaches an entry the sparse form omits.
    """
    if isinstance(min_samples, bool) or not isinstance(min_samples, (int, np.integer)) or min_samples < 1:
        raise UserError(f"min_samples: expected a positive integer, got {min_samples!r}")
    if not eps > 0:
        raise ValueError(f"cluster_labels: eps must be > 0, got {eps!r}")
    if scipy.sparse.issparse(distance):
        distance = scipy.sparse.coo_matrix(distance)
        if eps >= _omitted_floor(distance):  # only then can eps reach an entry the sparse form omits
            closest_omitted = _OmittedEntries(distance).smallest(1)
            if closest_omitted.size and eps >= closest_omitted[0]:
                raise UserError(f"DBSCAN eps {eps:.4f} reaches {closest_omitted[0]:.4f}, where images share no "
                                "k-reciprocal neighbour: every pair would be a neighbour; use a smaller --rho")
        distance = _within(distance, eps)
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed", n_jobs=1).fit_predict(distance)
    return labels.astype(np.int64)


def _within(distance: scipy.sparse.coo_matrix, eps: float) -> scipy.sparse.csr_matrix:
    """The stored entries up to ``eps`` and the diagonal: the same DBSCAN neighbourhoods, a fraction of the
    entries (a sparse form holds hundreds per row, an image has a few neighbours within eps)."""
    keep = (distance.data <= eps) | (distance.row == distance.col)
    return scipy.sparse.csr_matrix((distance.data[keep], (distance.row[keep], distance.col[keep])),
                                   shape=distance.shape)


def pseudo_labels(labels_per_type: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The pseudo-labelled set (step 5): images that no feature type calls an outlier.

    Parameters
    ----------
    labels_per_type : sequence of S + 1 arrays of shape (N,)
        DBSCAN labels of the global type first, then of each stripe.

    Returns
    -------
    kept : ndarray of shape (K,), int64
        Indices into the target training list, increasing.
    labels : ndarray of shape (K, S + 1), int64
        Row r holds the labels of image ``kept[r]``, one column per type, global first. The values are
        DBSCAN's cluster ids unchanged (no relabelling): a cluster whose every member another type calls
        an outlier leaves a gap in a column's ids.
    """
    if len(labels_per_type) == 0:
        raise ValueError("pseudo_labels: expected the labels of at least one feature type")
    columns = [np.asarray(labels, dtype=np.int64) for labels in labels_per_type]
    if any(column.shape != columns[0].shape or column.ndim != 1 for column in columns):
        raise ValueError("pseudo_labels: every feature type needs one label per image (1-D, equal lengths), "
                         f"got shapes {[column.shape for column in columns]}")
    table = np.stack(columns, axis=1)
    kept = np.flatnonzero((table != -1).all(axis=1))
    return kept, table[kept]


def count_clusters(labels: np.ndarray) -> int:
    """Number of distinct clusters, outliers (-1) not counted, whether or not there are any."""
    labels = np.asarray(labels)
    return int(np.unique(labels[labels != -1]).size)


def pair_scores(labels: np.ndarray, true_ids: np.ndarray) -> tuple[float, float]:
    """How well clusters match identities, counted over pairs of images (a diagnostic: the algorithm never sees
    ``true_ids``).

    Precision: of the pairs that share a cluster, the share that show one person. Recall: of the pairs that
    show one person (outliers included), the share that share a cluster. Percent; a precision without any
    clustered pair is 0.
    """
    labels, true_ids = np.asarray(labels), np.asarray(true_ids)
    clustered = labels != -1
    _, cells = np.unique(np.stack([labels[clustered], true_ids[clustered]]), axis=1, return_counts=True)
    _, cluster_sizes = np.unique(labels[clustered], return_counts=True)
    _, identity_sizes = np.unique(true_ids, return_counts=True)
    same_both, same_cluster, same_identity = (_pairs(sizes) for sizes in (cells, cluster_sizes, identity_sizes))
    return (100 * same_both / same_cluster if same_cluster else 0.0,
            100 * same_both / same_identity if same_identity else 0.0)


def _pairs(sizes: np.ndarray) -> int:
    return int((sizes.astype(np.int64) * (sizes - 1) // 2).sum())
