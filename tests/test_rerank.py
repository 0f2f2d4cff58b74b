"""Tests of reid.rerank: a hand-computed case, then the chunked sparse machinery against the slow dense
references of the algorithm (docs/algorithm.md) and of Zhong et al.'s equations (tests/rerank_reference.py) on
random clustered features."""

import math

import numpy as np
import pytest
import scipy.sparse
import torch

import reid.rerank as rerank
from reid.evaluation_metrics import mean_ap
from reid.rerank import re_ranking, re_ranking_query_gallery
from reid.utils.errors import UserError
from tests.rerank_reference import (
    clustered_features,
    paper_query_gallery_distance,
    query_gallery_distance,
    source_aware_distance,
    source_spread,
    squared_distances,
    target_jaccard,
)

TOLERANCE = 1e-4

# num target, num source, k1, k2, lambda
CASES = [
    (30, 20, 20, 6, 0.1),
    (97, 80, 20, 6, 0.1),
    (250, 80, 20, 6, 0.1),
    (97, 20, 5, 1, 0.3),
    (250, 80, 7, 3, 0.0),
    (97, 80, 10, 2, 0.5),
    (30, 20, 3, 1, 0.0),
]


def square_of_pairs() -> np.ndarray:
    """A, A' 60 degrees apart on the unit circle, and B, B' opposite them."""
    third = math.pi / 3
    return np.array([[1, 0], [math.cos(third), math.sin(third)], [-1, 0], [-math.cos(third), -math.sin(third)]],
                    dtype=np.float32)


def test_hand_computed_pairs():
    # d(A, A') = 2 - 2 cos 60 = 1 and the row maximum is d(A, B) = 4, so x = 1/4; R*(A) = {A, A'} with
    # weights 1 : e^-x, by symmetry m(A, A') = 2 e^-x / (1 + e^-x), so m / (2 - m) = e^-x and J = 1 - e^-x.
    target = square_of_pairs()
    pair_jaccard = 1 - math.exp(-0.25)
    # one source image at A: a = 1 - exp(-squared distance to A), divided by the largest (B, at distance 4)
    spread = np.array([0, 1 - math.exp(-1), 1 - math.exp(-4), 1 - math.exp(-3)]) / (1 - math.exp(-4))
    jaccard = np.array([[0, pair_jaccard, 1, 1], [pair_jaccard, 0, 1, 1],
                        [1, 1, 0, pair_jaccard], [1, 1, pair_jaccard, 0]])
    expected = 0.8 * jaccard + 0.2 * (spread[:, None] + spread[None, :])

    distance = re_ranking(target[:1], target, k1=1, k2=1, lambda_value=0.2)

    assert pair_jaccard == pytest.approx(0.2212, abs=1e-4)
    np.testing.assert_allclose(distance, expected, atol=1e-6)
    np.testing.assert_allclose(re_ranking(None, target, k1=1, k2=1, lambda_value=0), jaccard, atol=1e-6)


def test_hand_computed_query_against_gallery():
    # Query A against the gallery A', B, B' of square_of_pairs: the encodings are those of the case above, so
    # J(A, A') = 1 - e^-1/4 and J = 1 to B and B'; A's row maximum is d(A, B) = 4 and d(A, B') = 2 - 2 cos 120 = 3.
    points = square_of_pairs()
    query, gallery = points[:1], points[1:]
    expected = 0.7 * np.array([[1 - math.exp(-0.25), 1, 1]]) + 0.3 * np.array([[1, 4, 3]]) / 4

    distances = np.array([[1, 4, 3]], dtype=np.float32)  # the evaluation's own squared distances
    re_ranking_query_gallery(query, gallery, k1=1, k2=1, lambda_value=0.3, distances=distances)

    np.testing.assert_allclose(distances, expected, atol=1e-6)
    np.testing.assert_allclose(re_ranking_query_gallery(query, gallery, k1=1, k2=1), expected, atol=1e-6)
    assert expected[0, 0] == pytest.approx(0.2298, abs=1e-4)


@pytest.mark.parametrize("num, num_source, k1, k2, lambda_value", CASES)
def test_dense_matches_reference(num, num_source, k1, k2, lambda_value):
    target, source = clustered_features(num, num), clustered_features(num + 1, num_source)

    distance = re_ranking(source, target, k1=k1, k2=k2, lambda_value=lambda_value)

    assert distance.dtype == np.float32 and distance.shape == (num, num)
    expected = source_aware_distance(source, target, k1, k2, lambda_value)
    assert np.abs(distance - expected).max() <= TOLERANCE


@pytest.mark.parametrize("num, num_source, k1, k2, lambda_value", CASES)
def test_sparse_matches_reference(num, num_source, k1, k2, lambda_value):
    target, source = clustered_features(num, num), clustered_features(num + 1, num_source)
    jaccard = target_jaccard(target, k1, k2)
    spread = source_spread(source, target) if lambda_value else np.zeros(num)
    expected = (1 - lambda_value) * jaccard + lambda_value * (spread[:, None] + spread[None, :])

    distance = re_ranking(source, target, k1=k1, k2=k2, lambda_value=lambda_value, sparse=True)

    assert isinstance(distance, scipy.sparse.csr_matrix)
    assert distance.dtype == np.float32 and distance.shape == (num, num)
    entries = distance.tocoo()
    stored = np.zeros((num, num), dtype=bool)
    stored[entries.row, entries.col] = True
    assert stored.sum() == distance.nnz  # no duplicate entries
    np.testing.assert_array_equal(stored, (jaccard < 1) | np.eye(num, dtype=bool))
    assert np.abs(entries.data - expected[entries.row, entries.col]).max() <= TOLERANCE
    omitted = expected[~stored]
    assert omitted.size == 0 or omitted.min() >= 1 - lambda_value - TOLERANCE
    assert omitted.size == 0 or omitted.min() >= 1 - distance.diagonal().max() / 2 - TOLERANCE


@pytest.mark.parametrize("num, num_source, k1, k2, lambda_value", [(97, 80, 20, 6, 0.1), (150, 60, 7, 3, 0.3)])
def test_small_blocks_give_the_same_numbers(monkeypatch, num, num_source, k1, k2, lambda_value):
    """Blocks of a few rows exercise every merge across chunks (top-k, expansion, accumulation)."""
    target, source = clustered_features(num, num), clustered_features(num + 1, num_source)
    whole = re_ranking(source, target, k1=k1, k2=k2, lambda_value=lambda_value, sparse=True)
    monkeypatch.setattr(rerank, "_BLOCK_ELEMENTS", 2000)

    blocked = re_ranking(source, target, k1=k1, k2=k2, lambda_value=lambda_value, sparse=True)

    assert rerank._rows_per_block(num) <= num // 4
    np.testing.assert_array_equal(blocked.indptr, whole.indptr)
    np.testing.assert_array_equal(blocked.indices, whole.indices)
    expected = source_aware_distance(source, target, k1, k2, lambda_value)
    rows = np.repeat(np.arange(num), np.diff(blocked.indptr))
    assert np.abs(blocked.data - expected[rows, blocked.indices]).max() <= TOLERANCE


def test_dense_and_sparse_agree_exactly():
    target, source = clustered_features(3, 120), clustered_features(4, 50)
    dense = re_ranking(source, target, lambda_value=0.1)
    sparse = re_ranking(source, target, lambda_value=0.1, sparse=True)
    entries = sparse.tocoo()
    np.testing.assert_array_equal(dense[entries.row, entries.col], entries.data)


def test_torch_inputs_match_numpy_inputs():
    target, source = clustered_features(5, 60), clustered_features(6, 30)
    from_numpy = re_ranking(source, target, k1=8, k2=3)
    from_torch = re_ranking(torch.from_numpy(source).double(), torch.from_numpy(target), k1=8, k2=3)
    np.testing.assert_allclose(from_torch, from_numpy, atol=1e-6)


@pytest.mark.parametrize("num_query, num_gallery, k1, k2, lambda_value",
                         [(60, 12, 20, 6, 0.3), (150, 40, 7, 1, 0.3), (40, 90, 5, 3, 0.0), (25, 5, 20, 6, 1.0)])
def test_query_gallery_matches_reference(num_query, num_gallery, k1, k2, lambda_value):
    query, gallery = clustered_features(num_query, num_query), clustered_features(num_gallery, num_gallery)

    distance = re_ranking_query_gallery(query, gallery, k1=k1, k2=k2, lambda_value=lambda_value)

    assert distance.dtype == np.float32 and distance.shape == (num_query, num_gallery)
    expected = query_gallery_distance(query, gallery, k1, k2, lambda_value)
    assert np.abs(distance - expected).max() <= TOLERANCE


def test_query_gallery_small_blocks(monkeypatch):
    query, gallery = clustered_features(7, 120), clustered_features(8, 30)
    monkeypatch.setattr(rerank, "_BLOCK_ELEMENTS", 2000)
    expected = query_gallery_distance(query, gallery, 20, 6, 0.3)
    assert np.abs(re_ranking_query_gallery(query, gallery) - expected).max() <= TOLERANCE


def test_query_gallery_nearest_is_the_same_person():
    # Each query is a slightly moved copy of one gallery image: propagation must pick that image.
    gallery = clustered_features(9, 40)
    rng = np.random.default_rng(10)
    owners = rng.integers(0, 40, 100)
    query = gallery[owners] + 0.05 * rng.standard_normal((100, gallery.shape[1])).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    distance = re_ranking_query_gallery(query, gallery)
    assert (distance.argmin(axis=1) == owners).mean() > 0.9


@pytest.mark.parametrize("options, message", [
    ({"k1": 0}, "k1"), ({"k2": 2.5}, "k2"), ({"lambda_value": 1.5}, "lambda_value"), ({"k1": True}, "k1")])
def test_bad_options_are_user_errors(options, message):
    target = clustered_features(11, 20)
    with pytest.raises(UserError, match=message):
        re_ranking(target, target, **options)
    with pytest.raises(UserError, match=message):
        re_ranking_query_gallery(target, target, **options)


def test_bad_features_are_refused():
    target = clustered_features(12, 20)
    with pytest.raises(ValueError, match="L2-normalised"):
        re_ranking(target, 2 * target)
    with pytest.raises(ValueError, match="source_features are needed"):
        re_ranking(None, target, lambda_value=0.1)
    with pytest.raises(ValueError, match="width"):
        re_ranking(clustered_features(13, 20, width=8), target)
    axes = np.eye(20, 32, dtype=np.float32)  # exact unit rows: the distance to the source is exactly 0
    with pytest.raises(ValueError, match="coincides"):
        re_ranking(axes, axes)


# num query, num gallery, block elements (None: the default), k1, k2
GIVEN_DISTANCES_CASES = [
    (60, 140, None, 20, 6),
    (60, 140, 200 * 30, 20, 6),  # 30 rows a block: every list is full after the first block
    (60, 140, 2000, 20, 6),  # 10 rows a block: lists fill up over several blocks
    (45, 80, 125 * 12, 7, 3),
]


@pytest.mark.parametrize("num_query, num_gallery, block, k1, k2", GIVEN_DISTANCES_CASES)
def test_query_gallery_reuses_and_overwrites_given_distances(monkeypatch, num_query, num_gallery, block, k1, k2):
    """The evaluation passes its own squared distances: they are read instead of recomputed and overwritten
    with the re-ranked distances, which match the paper's equations."""
    features = clustered_features(20, num_query + num_gallery, width=24)
    query, gallery = features[:num_query], features[num_query:]
    distances = squared_distances(query, gallery).astype(np.float32)
    if block:
        monkeypatch.setattr(rerank, "_BLOCK_ELEMENTS", block)

    result = re_ranking_query_gallery(query, gallery, k1=k1, k2=k2, distances=distances)

    assert result is distances
    expected = paper_query_gallery_distance(query, gallery, k1, k2, 0.3)
    assert np.abs(distances - expected).max() <= TOLERANCE
    assert np.abs(re_ranking_query_gallery(query, gallery, k1=k1, k2=k2) - expected).max() <= TOLERANCE


def test_paper_and_spec_references_agree():
    query, gallery = clustered_features(21, 30), clustered_features(22, 50)
    np.testing.assert_allclose(paper_query_gallery_distance(query, gallery), query_gallery_distance(query, gallery),
                               atol=1e-12)


def test_given_distances_of_another_shape_are_refused():
    query, gallery = clustered_features(23, 10), clustered_features(24, 20)
    with pytest.raises(ValueError, match=r"distances of shape \(20, 10\), expected \(10, 20\)"):
        re_ranking_query_gallery(query, gallery, distances=np.zeros((20, 10), np.float32))


def test_re_ranking_raises_map_on_clustered_identities():
    """What the evaluation's --rerank is for: on images grouped by identity, k-reciprocal neighbours lift
    the true matches that a plain distance ranks below strangers."""
    rng = np.random.default_rng(25)
    centres = rng.standard_normal((40, 32))
    gallery_ids, query_ids = np.repeat(np.arange(40), 6), np.arange(40)
    gallery = centres[gallery_ids] + 0.9 * rng.standard_normal((240, 32))
    query = centres[query_ids] + 0.9 * rng.standard_normal((40, 32))
    gallery, query = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (gallery, query))
    plain = squared_distances(query, gallery)

    reranked = re_ranking_query_gallery(query, gallery)

    before, after = mean_ap(plain, query_ids, gallery_ids), mean_ap(reranked, query_ids, gallery_ids)
    assert after > before + 0.05, (before, after)
