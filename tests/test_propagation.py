"""SSG++: the labelled-set draw, its storage, the selection schedule and label propagation."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reid.propagation import (
    LabelledSelection,
    SemiSupervision,
    draw_labelled_set,
    load_or_draw_labelled_set,
    num_selected,
    propagate_labels,
)
from reid.utils.errors import UserError

GLOBAL = np.array([0, 0, 1, -1, 1, 2, 2, 2, -1, 0])
ITEMS = [(f"img{i}.jpg", i // 3, 0) for i in range(len(GLOBAL))]


def test_cluster_draw_takes_one_member_per_cluster_and_is_reproducible():
    drawn = draw_labelled_set(GLOBAL, "cluster")
    assert sorted(GLOBAL[drawn]) == [0, 1, 2]
    assert np.array_equal(drawn, draw_labelled_set(GLOBAL, "cluster"))


def test_random_draw_takes_as_many_images():
    drawn = draw_labelled_set(GLOBAL, "random")
    assert len(drawn) == 3 and len(set(drawn)) == 3
    assert np.array_equal(drawn, draw_labelled_set(GLOBAL, "random"))


def test_labelled_set_is_saved_in_a_new_folder_and_reused(tmp_path):
    fpath = tmp_path / "not" / "yet" / "labelled_set.json"
    drawn = load_or_draw_labelled_set(str(fpath), ITEMS, GLOBAL, "cluster")
    stored = json.loads(fpath.read_text())
    assert stored["indices"] == drawn.tolist()
    assert stored["fnames"] == [ITEMS[i][0] for i in drawn]
    other_clusters = np.zeros_like(GLOBAL)
    assert np.array_equal(load_or_draw_labelled_set(str(fpath), ITEMS, other_clusters, "cluster"), drawn)


def test_the_draw_follows_its_seed_and_a_stored_set_of_another_seed_is_refused(tmp_path):
    many = np.repeat(np.arange(20), 5)
    items = [(f"img{i}.jpg", int(label), 0) for i, label in enumerate(many)]
    fpath = tmp_path / "labelled_set.json"
    drawn = load_or_draw_labelled_set(str(fpath), items, many, "cluster", seed=3)
    assert np.array_equal(drawn, draw_labelled_set(many, "cluster", seed=3))
    assert not np.array_equal(drawn, draw_labelled_set(many, "cluster", seed=0))  # 5**20 possible draws
    assert json.loads(fpath.read_text())["seed"] == 3
    assert np.array_equal(load_or_draw_labelled_set(str(fpath), items, many, "cluster", seed=3), drawn)
    with pytest.raises(UserError, match="--label-seed"):
        load_or_draw_labelled_set(str(fpath), items, many, "cluster", seed=0)


def test_stored_set_of_another_target_is_refused(tmp_path):
    fpath = tmp_path / "labelled_set.json"
    load_or_draw_labelled_set(str(fpath), ITEMS, GLOBAL, "cluster")
    renamed = [(f"other{i}.jpg", pid, cam) for i, (_, pid, cam) in enumerate(ITEMS)]
    with pytest.raises(UserError, match="another target"):
        load_or_draw_labelled_set(str(fpath), renamed, GLOBAL, "cluster")


def test_selection_schedule_grows_by_one_share_of_u_per_iteration_of_the_run():
    assert num_selected(5, 300, iterations=30) == 60
    assert num_selected(0, 300, iterations=30) == 10
    assert num_selected(29, 300, iterations=30) == 300
    assert num_selected(40, 300, iterations=30) == 300
    assert num_selected(1, 61, iterations=4) == 30
    assert num_selected(3, 61, iterations=4) == 60
    assert num_selected(3, 61, iterations=3) == 61


def test_propagation_copies_the_nearest_labelled_identity_most_confident_first():
    rng = np.random.default_rng(0)
    centres = F.normalize(torch.from_numpy(rng.normal(size=(3, 16))).float(), dim=1)
    spread = np.tile([0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 3)
    member = np.repeat(np.arange(3), 7)
    noise = torch.from_numpy(rng.normal(size=(21, 16))).float() * torch.tensor(spread).float()[:, None] * 0.3
    features = F.normalize(centres[member] + noise, dim=1)
    labelled = np.array([0, 7, 14])  # the least noisy member of each group
    propagation = propagate_labels(features, labelled, np.array([100, 200, 300]), k1=4, k2=2)
    assert sorted(propagation.indices) == sorted(set(range(21)) - set(labelled))
    assert np.array_equal(propagation.labels, 100 * (member[propagation.indices] + 1))
    assert np.all(np.diff(propagation.distances) >= 0)


def test_semi_supervision_selects_the_labelled_set_then_the_schedules_share_of_propagated_labels(tmp_path):
    rng = np.random.default_rng(1)
    member = np.repeat(np.arange(3), 8)  # three people, eight images each
    centres = F.normalize(torch.from_numpy(rng.normal(size=(3, 2, 16))).float(), dim=2)
    pooled = centres[member] + 0.1 * torch.from_numpy(rng.normal(size=(24, 2, 16))).float()
    items = [(f"img{i}.jpg", 10 + int(pid), 0) for i, pid in enumerate(member)]
    clusters = member.copy()
    clusters[[7, 15, 23]] = -1
    supervision = SemiSupervision(str(tmp_path / "labelled_set.json"), items, "cluster", label_iteration=1,
                                  iterations=3)
    assert supervision.select(0, clusters, pooled) is None
    for iteration, expected in ((1, 14), (2, 21)):  # |U| = 21: 7 more per iteration of 3
        selection = supervision.select(iteration, clusters, pooled)
        labelled = selection.indices[:3]
        assert sorted(member[labelled]) == [0, 1, 2] and len(selection.indices) == 3 + expected
        assert len(set(selection.indices)) == len(selection.indices)
        assert np.array_equal(selection.labels[:3], 10 + member[labelled])  # the annotator's answers
        assert np.array_equal(selection.true_ids, 10 + member[selection.indices])
        assert selection.summary() == {"labelled": 3, "propagated": expected, "propagated_accuracy": 100.0}


def test_selection_summary_counts_the_propagated_labels_that_are_right():
    selection = LabelledSelection(indices=np.arange(5), labels=np.array([1, 2, 1, 2, 2]), num_labelled=2,
                                  true_ids=np.array([1, 2, 1, 1, 2]))
    assert selection.summary() == {"labelled": 2, "propagated": 3, "propagated_accuracy": pytest.approx(200 / 3)}
    nothing = LabelledSelection(np.arange(2), np.array([1, 2]), 2, np.array([1, 2]))
    assert nothing.summary() == {"labelled": 2, "propagated": 0, "propagated_accuracy": None}
