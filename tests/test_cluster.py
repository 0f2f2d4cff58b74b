"""Tests of reid.cluster: eps (hand-computed, dense against sparse), DBSCAN on both forms, pseudo-labels."""

import numpy as np
import pytest
import scipy.sparse

from reid.cluster import cluster_labels, compute_eps, count_clusters, pair_scores, pseudo_labels
from reid.rerank import re_ranking
from reid.utils.errors import UserError
from tests.rerank_reference import clustered_features


def upper_example() -> np.ndarray:
    """Upper entries 0.1, 0.3, 0 (left out), 0.2, 0.5, 0.4; the diagonal and lower part must be ignored."""
    return np.array([[0.7, 0.1, 0.3, 0.0],
                     [0.0, 0.7, 0.2, 0.5],
                     [0.0, 0.0, 0.7, 0.4],
                     [0.0, 0.0, 0.0, 0.7]], dtype=np.float32)


@pytest.mark.parametrize("rho, expected", [
    (0.2, 0.1),     # round(1.0) = 1
    (0.5, 0.15),    # round(2.5) = 2: half to even, so 0.1 and 0.2
    (0.7, 0.25),    # round(3.5) = 4: 0.1, 0.2, 0.3, 0.4
    (1.0, 0.3),     # all five
])
def test_eps_hand_computed(rho, expected):
    assert compute_eps(upper_example(), rho) == pytest.approx(expected, abs=1e-7)


def test_eps_refuses_a_rho_that_selects_nothing():
    with pytest.raises(UserError, match="selects none"):
        compute_eps(upper_example(), 0.05)  # round(0.25) = 0
    with pytest.raises(UserError, match="rho"):
        compute_eps(upper_example(), 0)


def rerank_pair(seed: int, num: int, lambda_value: float = 0.1):
    target, source = clustered_features(seed, num), clustered_features(seed + 1, num // 2)
    return (re_ranking(source, target, lambda_value=lambda_value),
            re_ranking(source, target, lambda_value=lambda_value, sparse=True))


@pytest.mark.parametrize("seed, num, lambda_value, rho", [
    (1, 60, 0.1, 1.6e-3), (2, 150, 0.1, 1.6e-3), (3, 150, 0.0, 0.01), (4, 300, 0.1, 0.02),
    (5, 300, 0.3, 5e-3)])
def test_eps_sparse_equals_dense(seed, num, lambda_value, rho):
    dense, sparse = rerank_pair(seed, num, lambda_value)
    assert compute_eps(sparse, rho) == compute_eps(dense, rho)


def test_eps_sparse_rebuilds_omitted_entries():
    # diagonal 0.2: s = 0.1 each, lambda = 0.1, so the omitted pair (0, 2) is 0.9 + 0.1 + 0.1 = 1.1
    sparse = scipy.sparse.csr_matrix(np.array([[0.2, 0.3, 0.0], [0.3, 0.2, 0.95], [0.0, 0.95, 0.2]],
                                              dtype=np.float32))
    dense = np.array([[0.2, 0.3, 1.1], [0.3, 0.2, 0.95], [1.1, 0.95, 0.2]], dtype=np.float32)
    for rho, expected in [(0.3, 0.3), (0.67, 0.625), (1.0, (0.3 + 0.95 + 1.1) / 3)]:
        assert compute_eps(sparse, rho) == compute_eps(dense, rho) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("seed, num, lambda_value, rho",
                         [(11, 120, 0.1, 0.2), (12, 200, 0.3, 0.5), (13, 90, 0.0, 0.9)])
def test_eps_sparse_equals_dense_when_omitted_entries_are_reached(seed, num, lambda_value, rho):
    dense, sparse = rerank_pair(seed, num, lambda_value)
    upper = dense[np.triu_indices(num, 1)]
    assert np.sort(upper)[round(rho * upper.size) - 1] >= 1 - lambda_value  # the selection reaches J = 1
    assert compute_eps(sparse, rho) == compute_eps(dense, rho)


def built_sparse_form(seed: int, num: int, num_stored: int, weight: float
                      ) -> tuple[np.ndarray, scipy.sparse.csr_matrix]:
    """A dense D and its sparse form as re_ranking defines them, with a random stored pattern."""
    rng = np.random.default_rng(seed)
    shift = (np.float32(weight) * rng.uniform(0, 1, num).astype(np.float32))
    shift[0] = np.float32(weight)  # max a = 1
    dense = np.float32(1) - np.float32(weight) + (shift[:, None] + shift[None, :])
    np.fill_diagonal(dense, 2 * shift)
    first, second = rng.integers(0, num, (2, num_stored))
    keep = first != second
    values = rng.uniform(0.05, 0.6, keep.sum()).astype(np.float32)
    dense[first[keep], second[keep]] = dense[second[keep], first[keep]] = values
    pattern = np.eye(num, dtype=bool)
    pattern[first[keep], second[keep]] = pattern[second[keep], first[keep]] = True
    return dense, scipy.sparse.csr_matrix(np.where(pattern, dense, 0))


@pytest.mark.parametrize("seed, weight, rho", [(16, 0.1, 0.05), (17, 0.3, 0.03), (18, 0.0, 0.2)])
def test_eps_sparse_equals_dense_far_into_omitted_entries(seed, weight, rho):
    dense, sparse = built_sparse_form(seed, 300, 800, weight)
    assert np.round(rho * 300 * 299 / 2) > (sparse.nnz - 300) / 2  # more selected than stored pairs
    assert compute_eps(sparse, rho) == compute_eps(dense, rho)


def test_eps_sparse_refuses_lambda_one():
    _, sparse = rerank_pair(14, 40, lambda_value=1.0)
    with pytest.raises(ValueError, match="lambda_value = 1"):
        compute_eps(sparse, 0.1)


def line_distances() -> np.ndarray:
    positions = np.array([0, 0.1, 0.2, 0.3, 5, 5.1, 5.2, 5.3, 10])
    return np.abs(positions[:, None] - positions[None, :]).astype(np.float32)


def test_cluster_labels_hand_made():
    dense = line_distances()
    sparse = scipy.sparse.csr_matrix(np.where(dense < 1, dense, 0))
    sparse.setdiag(0)  # stored zeros: every image is its own neighbour
    expected = [0, 0, 0, 0, 1, 1, 1, 1, -1]
    np.testing.assert_array_equal(cluster_labels(dense, eps=0.35), expected)
    np.testing.assert_array_equal(cluster_labels(sparse, eps=0.35), expected)
    np.testing.assert_array_equal(cluster_labels(dense, eps=0.15), [-1] * 9)  # at most 3 neighbours each
    np.testing.assert_array_equal(cluster_labels(dense, eps=0.15, min_samples=3), expected)


@pytest.mark.parametrize("seed, num, lambda_value, rho", [
    (7, 200, 0.1, 0.01), (8, 300, 0.1, 0.02), (9, 300, 0.0, 0.02), (10, 250, 0.3, 0.01)])
def test_cluster_labels_equal_on_dense_and_sparse(seed, num, lambda_value, rho):
    dense, sparse = rerank_pair(seed, num, lambda_value)
    eps = compute_eps(sparse, rho)

    labels = cluster_labels(sparse, eps)

    assert count_clusters(labels) >= 3 and (labels == -1).sum() >= 3  # a case with clusters and outliers
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, cluster_labels(dense, eps))


def test_cluster_labels_refuses_an_eps_reaching_omitted_entries():
    dense, sparse = rerank_pair(15, 80, lambda_value=0.1)
    entries = sparse.tocoo()
    stored = np.zeros(dense.shape, dtype=bool)
    stored[entries.row, entries.col] = True
    closest_omitted = dense[~stored].min()
    cluster_labels(sparse, float(np.nextafter(closest_omitted, 0)))
    with pytest.raises(UserError, match="share no"):
        cluster_labels(sparse, float(closest_omitted))


def test_cluster_labels_refuses_bad_options():
    with pytest.raises(UserError, match="min_samples"):
        cluster_labels(line_distances(), 0.35, min_samples=0)
    with pytest.raises(ValueError, match="eps"):
        cluster_labels(line_distances(), 0.0)


def test_pseudo_labels_drop_any_outlier():
    global_labels = np.array([0, 0, 1, 1, -1, 2, 2])
    upper = np.array([3, 3, -1, 0, 0, 1, 1])
    lower = np.array([0, 1, 1, 1, 1, 2, -1])

    kept, labels = pseudo_labels([global_labels, upper, lower])

    np.testing.assert_array_equal(kept, [0, 1, 3, 5])
    np.testing.assert_array_equal(labels, [[0, 3, 0], [0, 3, 1], [1, 0, 1], [2, 1, 2]])


def test_pseudo_labels_refuse_mismatched_types():
    with pytest.raises(ValueError, match="equal lengths"):
        pseudo_labels([np.zeros(3), np.zeros(4)])
    with pytest.raises(ValueError, match="at least one"):
        pseudo_labels([])


@pytest.mark.parametrize("labels, expected", [
    ([0, 1, 1, 2], 3),           # no outlier: the released count (distinct - 1) said 2
    ([0, -1, 1, -1, 1], 2),
    ([-1, -1], 0),
    ([4, 4, 7], 2),
])
def test_count_clusters(labels, expected):
    assert count_clusters(np.array(labels)) == expected


def test_pair_scores_count_pairs_of_one_cluster_and_one_identity():
    # Clusters {0, 1, 2} and {3, 4}, outlier 5; people {0, 1}, {2, 3, 4}, {5}.
    labels = np.array([7, 7, 7, 2, 2, -1])
    people = np.array([0, 0, 1, 1, 1, 2])
    precision, recall = pair_scores(labels, people)
    # Pairs in a cluster: (0,1) (0,2) (1,2) (3,4); of one person among them: (0,1) (3,4). Same-person pairs:
    # (0,1) (2,3) (2,4) (3,4).
    assert (precision, recall) == (50.0, 50.0)
    assert pair_scores(people, people) == (100.0, 100.0)
    assert pair_scores(np.full(6, -1), people) == (0.0, 0.0)
