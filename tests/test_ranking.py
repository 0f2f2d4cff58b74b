"""Tests of the re-ID evaluation metrics (docs/algorithm.md, "Evaluation protocol": open-reid's).

Hand-computed rankings (ties, same-camera filtering, queries without a valid match, distractors),
scikit-learn's average precision per query, and a plain per-query reference of the protocol on random
problems.
"""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from reid.evaluation_metrics import NoValidQueryError, cmc, mean_ap, ranking
from reid.utils.errors import UserError


def filtered_ranking(distances, query_id, query_cam, gallery_ids, gallery_cams, separate_camera_set=False):
    """One query's ranking by the protocol: stable sort by distance, its identity seen by its camera removed."""
    order = np.argsort(distances, kind="stable")
    same_camera = gallery_cams[order] == query_cam
    is_match = gallery_ids[order] == query_id
    keep = ~same_camera if separate_camera_set else ~(is_match & same_camera)
    return distances[order][keep], is_match[keep]


def reference_average_precision(distances, is_match):
    """Mean over true matches of the precision among the gallery items at or below the match's distance."""
    precisions = []
    for match_distance in distances[is_match]:
        at_or_below = distances <= match_distance
        precisions.append(np.sum(is_match & at_or_below) / np.sum(at_or_below))
    return sum(precisions) / len(precisions)


def reference_metrics(problem, topk, separate_camera_set=False, first_match_break=True):
    """(mAP, CMC) one query at a time; each match ranks at the number of non-matches before it."""
    distmat, query_ids, gallery_ids, query_cams, gallery_cams = problem
    precisions, hits = [], np.zeros(topk)
    for query in range(len(distmat)):
        distances, is_match = filtered_ranking(
            distmat[query],
            query_ids[query],
            query_cams[query],
            gallery_ids,
            gallery_cams,
            separate_camera_set,
        )
        if not is_match.any():
            continue
        precisions.append(reference_average_precision(distances, is_match))
        ranks = [np.sum(~is_match[:position]) for position in np.flatnonzero(is_match)]
        if first_match_break:
            ranks = ranks[:1]
        for rank in ranks:
            if rank < topk:
                hits[rank] += 1 / len(ranks)
    return np.mean(precisions), np.cumsum(hits) / len(precisions)


def random_problem(seed, n_queries, n_gallery, integer_distances, dtype=np.float32):
    rng = np.random.default_rng(seed)
    shape = (n_queries, n_gallery)
    distmat = rng.integers(0, 4, shape) if integer_distances else rng.random(shape)
    n_ids = max(2, n_gallery // 4)
    return (
        distmat.astype(dtype),
        rng.integers(0, n_ids, n_queries),
        rng.integers(0, n_ids, n_gallery),
        rng.integers(0, 3, n_queries),
        rng.integers(0, 3, n_gallery),
    )


SHAPES = [(1, 1), (3, 10), (20, 60), (57, 200), (100, 31)]


def test_two_matches_in_a_plain_ranking():
    distmat = [[0.1, 0.2, 0.3, 0.4, 0.5]]
    labels = dict(query_ids=[7], gallery_ids=[1, 7, 2, 7, 3], query_cams=[0], gallery_cams=[1] * 5)
    # Matches at positions 2 and 4: precisions 1/2 and 2/4.
    assert mean_ap(distmat, **labels) == pytest.approx(0.5)
    np.testing.assert_allclose(cmc(distmat, **labels, topk=3), [0, 1, 1])


def test_tied_distances_form_one_threshold_and_rank_by_gallery_index():
    labels = dict(query_ids=[7], query_cams=[0], gallery_cams=[1] * 4)
    distmat = np.array([[1, 1, 1, 2]], dtype=np.float32)
    gallery_ids = [3, 7, 3, 7]
    # Threshold 1 holds 3 items with 1 match, threshold 2 all 4 with 2: (1/3 + 2/4) / 2.
    assert mean_ap(distmat, gallery_ids=gallery_ids, **labels) == pytest.approx(5 / 12)
    assert average_precision_score([0, 1, 0, 1], -distmat[0]) == pytest.approx(5 / 12)
    np.testing.assert_allclose(cmc(distmat, gallery_ids=gallery_ids, **labels, topk=3), [0, 1, 1])
    all_tied = np.ones((1, 4), dtype=np.float32)
    assert mean_ap(all_tied, gallery_ids=[3, 3, 7, 3], **labels) == pytest.approx(1 / 4)
    np.testing.assert_allclose(cmc(all_tied, gallery_ids=[3, 3, 7, 3], **labels, topk=4), [0, 0, 1, 1])
    np.testing.assert_allclose(cmc(all_tied, gallery_ids=[7, 3, 3, 3], **labels, topk=2), [1, 1])


def test_one_ulp_apart_is_not_a_tie():
    just_below_one = np.nextafter(np.float32(1), np.float32(0))
    distmat = np.array([[1, just_below_one]], dtype=np.float32)
    labels = dict(query_ids=[7], gallery_ids=[7, 3], query_cams=[0], gallery_cams=[1, 1])
    assert mean_ap(distmat, **labels) == pytest.approx(1 / 2)
    np.testing.assert_allclose(cmc(distmat, **labels, topk=2), [0, 1])


def test_infinite_distances_are_ordinary_values():
    distmat = np.array([[np.inf, 1, np.inf]])
    labels = dict(query_ids=[7], gallery_ids=[7, 3, 7], query_cams=[0], gallery_cams=[1, 1, 1])
    assert mean_ap(distmat, **labels) == pytest.approx(2 / 3)
    np.testing.assert_allclose(cmc(distmat, **labels, topk=3), [0, 1, 1])


def test_same_identity_same_camera_is_removed_and_other_identities_stay():
    distmat = [[0.1, 0.2, 0.3, 0.4]]
    labels = dict(query_ids=[7], gallery_ids=[7, 5, 7, 7], query_cams=[0], gallery_cams=[0, 0, 1, 0])
    # Left: identity 5 (same camera, other identity) at 0.2, then the true match at 0.3.
    assert mean_ap(distmat, **labels) == pytest.approx(1 / 2)
    np.testing.assert_allclose(cmc(distmat, **labels, topk=2), [0, 1])
    # open-reid's default cameras differ between query and gallery, so nothing is removed.
    unfiltered = mean_ap(distmat, query_ids=[7], gallery_ids=[7, 5, 7, 7])
    assert unfiltered == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


def test_query_without_valid_match_is_skipped():
    distmat = [[0.1, 0.2, 0.3, 0.4, 0.5], [0.5, 0.4, 0.3, 0.2, 0.1]]
    labels = dict(
        query_ids=[7, 9], gallery_ids=[7, 5, 7, 7, 9], query_cams=[0, 0], gallery_cams=[0, 0, 1, 0, 0]
    )
    assert mean_ap(distmat, **labels) == pytest.approx(1 / 2)
    np.testing.assert_allclose(cmc(distmat, **labels, topk=3), [0, 1, 1])


def test_no_valid_query_raises_a_clear_value_error():
    labels = dict(query_ids=[7, 9], gallery_ids=[7, 9], query_cams=[0, 1], gallery_cams=[0, 1])
    for metric in (mean_ap, cmc):
        with pytest.raises(ValueError, match="none of the 2 queries has a true match") as raised:
            metric([[0.1, 0.2], [0.3, 0.4]], **labels)
        assert isinstance(raised.value, (NoValidQueryError, UserError))
    with pytest.raises(NoValidQueryError):
        mean_ap(np.zeros((0, 5)))


def test_distractor_identity_zero_is_an_ordinary_non_match():
    distmat = [[0.1, 0.2, 0.3]]
    labels = dict(query_ids=[5], gallery_ids=[0, 5, 0], query_cams=[0], gallery_cams=[1, 1, 1])
    assert mean_ap(distmat, **labels) == pytest.approx(1 / 2)
    np.testing.assert_allclose(cmc(distmat, **labels, topk=3), [0, 1, 1])


def test_default_labels_match_query_i_with_gallery_i():
    distmat = [[0, 1, 2, 3], [0, 1, 2, 3], [3, 2, 1, 0]]
    assert mean_ap(distmat) == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    np.testing.assert_allclose(cmc(distmat, topk=2), [1 / 3, 1])


@pytest.mark.parametrize("integer_distances", [False, True])
def test_average_precision_matches_sklearn_per_query(integer_distances):
    distmat, query_ids, gallery_ids, query_cams, gallery_cams = random_problem(3, 25, 80, integer_distances)
    expected = []
    for query in range(len(distmat)):
        keep = (gallery_ids != query_ids[query]) | (gallery_cams != query_cams[query])
        is_match = gallery_ids[keep] == query_ids[query]
        if not is_match.any():
            continue
        sklearn_ap = average_precision_score(is_match, -distmat[query, keep])
        rows = slice(query, query + 1)
        ours = mean_ap(distmat[rows], query_ids[rows], gallery_ids, query_cams[rows], gallery_cams)
        assert ours == pytest.approx(sklearn_ap, abs=1e-12)
        expected.append(sklearn_ap)
    overall = mean_ap(distmat, query_ids, gallery_ids, query_cams, gallery_cams)
    assert overall == pytest.approx(np.mean(expected), abs=1e-12)


@pytest.mark.parametrize("chunk_elements", [1 << 23, 37])
@pytest.mark.parametrize("integer_distances", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_fast_path_matches_plain_reference(monkeypatch, shape, integer_distances, chunk_elements):
    # A tiny chunk budget sends one or two queries per chunk through the thread pool.
    monkeypatch.setattr(ranking, "_CHUNK_ELEMENTS", chunk_elements)
    problem = random_problem(sum(shape), *shape, integer_distances)
    expected_map, expected_cmc = reference_metrics(problem, topk=10)
    assert mean_ap(*problem) == pytest.approx(expected_map, abs=1e-12)
    np.testing.assert_allclose(cmc(*problem, topk=10), expected_cmc, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32, np.uint16])
def test_other_distance_dtypes_match_reference(dtype):
    problem = random_problem(11, 40, 90, integer_distances=dtype != np.float64, dtype=dtype)
    expected_map, expected_cmc = reference_metrics(problem, topk=5)
    assert mean_ap(*problem) == pytest.approx(expected_map, abs=1e-12)
    np.testing.assert_allclose(cmc(*problem, topk=5), expected_cmc, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64])
def test_torch_tensors_give_the_numpy_numbers(dtype):
    distmat, *labels = random_problem(5, 30, 70, integer_distances=True)
    tensor = torch.from_numpy(distmat).to(dtype)
    tensor_labels = [torch.from_numpy(values) for values in labels]
    assert mean_ap(tensor, *tensor_labels) == pytest.approx(mean_ap(distmat, *labels), abs=1e-12)
    np.testing.assert_allclose(cmc(tensor, *tensor_labels, topk=8), cmc(distmat, *labels, topk=8))


def test_torch_float_tensor_keeps_exact_float32_order():
    distmat, *labels = random_problem(6, 30, 70, integer_distances=False)
    expected_map, expected_cmc = reference_metrics((distmat, *labels), topk=6)
    assert mean_ap(torch.from_numpy(distmat), *labels) == pytest.approx(expected_map, abs=1e-12)
    np.testing.assert_allclose(cmc(torch.from_numpy(distmat), *labels, topk=6), expected_cmc, atol=1e-12)


@pytest.mark.parametrize("integer_distances", [False, True])
def test_separate_camera_set_matches_reference(integer_distances):
    problem = random_problem(7, 40, 120, integer_distances)
    _, expected = reference_metrics(problem, topk=10, separate_camera_set=True)
    np.testing.assert_allclose(cmc(*problem, topk=10, separate_camera_set=True), expected, atol=1e-12)
    distmat = [[0.1, 0.2, 0.3]]
    labels = dict(query_ids=[7], gallery_ids=[5, 7, 7], query_cams=[0], gallery_cams=[0, 0, 1])
    # Only the other-camera match at 0.3 is left: it ranks first.
    np.testing.assert_allclose(cmc(distmat, **labels, topk=2, separate_camera_set=True), [1, 1])


def test_all_matches_counted_without_first_match_break():
    distmat = [[0.1, 0.2, 0.3, 0.4]]
    labels = dict(query_ids=[7], gallery_ids=[7, 5, 7, 5], query_cams=[0], gallery_cams=[1] * 4)
    # Matches after 0 and 1 non-matches, each weighing 1/2.
    np.testing.assert_allclose(cmc(distmat, **labels, topk=3, first_match_break=False), [0.5, 1, 1])
    problem = random_problem(8, 40, 120, integer_distances=True)
    _, expected = reference_metrics(problem, topk=10, first_match_break=False)
    np.testing.assert_allclose(cmc(*problem, topk=10, first_match_break=False), expected, atol=1e-12)


@pytest.mark.parametrize("first_match_break", [True, False])
def test_single_gallery_shot_is_a_deterministic_curve_in_unit_interval(first_match_break):
    problem = random_problem(9, 40, 200, integer_distances=False)
    options = dict(topk=20, single_gallery_shot=True, first_match_break=first_match_break)
    curve = cmc(*problem, **options)
    assert np.all(np.diff(curve) >= 0)
    assert curve[0] >= 0 and curve[-1] <= 1
    np.testing.assert_array_equal(cmc(*problem, **options), curve)


@pytest.mark.parametrize("first_match_break", [True, False])
def test_single_gallery_shot_with_one_image_per_identity_is_the_plain_curve(first_match_break):
    rng = np.random.default_rng(10)
    distmat = rng.random((30, 50), dtype=np.float32)
    gallery_ids = rng.permutation(50)
    query_ids = rng.integers(0, 50, 30)
    query_cams, gallery_cams = np.zeros(30, int), np.ones(50, int)
    problem = (distmat, query_ids, gallery_ids, query_cams, gallery_cams)
    sampled = cmc(*problem, topk=10, single_gallery_shot=True, first_match_break=first_match_break)
    np.testing.assert_allclose(sampled, cmc(*problem, topk=10), atol=1e-12)


def test_bad_input_names_the_argument():
    with pytest.raises(UserError, match="distmat: expected a 2-D"):
        mean_ap(np.zeros(4))
    with pytest.raises(UserError, match="gallery_ids: expected 3 integer labels"):
        cmc(np.zeros((2, 3)), gallery_ids=[1, 2])
    with pytest.raises(UserError, match="query_cams: expected 2 integer labels"):
        mean_ap(np.zeros((2, 3)), query_cams=[0.5, 1.5])
    with pytest.raises(UserError, match="topk: expected a positive integer"):
        cmc(np.zeros((2, 3)), topk=0)
    with pytest.raises(UserError, match="NaN"):
        mean_ap(np.array([[0.1, np.nan]]))
