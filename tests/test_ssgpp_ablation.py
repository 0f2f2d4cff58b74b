"""benchmarks/ssgpp_ablation.py: the demo profile it reads (what run.sh runs) and the selections of its variants."""
import numpy as np
import pytest
from conftest import run_sh

from benchmarks.profile import read_profile
from benchmarks.ssgpp_ablation import VARIANTS, format_table, labelled_only, true_labels
from reid.propagation import LabelledSelection


def holds(argv, options):
    """Whether ``options`` appear in ``argv`` in order, side by side."""
    return any(argv[i:i + len(options)] == options for i in range(len(argv) - len(options) + 1))


def test_the_profile_is_what_run_sh_passes_for_the_synthetic_pair(tmp_path):
    profile = read_profile()
    source, ssg, ssgpp, _ = run_sh(tmp_path)
    assert holds(source, profile["MODEL"]) and holds(source, profile["SOURCE"])
    for step in (ssg, ssgpp):
        assert holds(step, profile["MODEL"]) and holds(step, profile["ADAPT"])
    assert holds(ssgpp, profile["SEMI"]) and not holds(ssg, profile["SEMI"])


def test_every_variant_adds_options_the_scripts_accept():
    profile = read_profile()
    iterations = profile["ADAPT"][profile["ADAPT"].index("--iteration") + 1]
    options = {name: variant.options(profile) for name, variant in VARIANTS.items()}
    assert options["ssg"] == [] and options["ssgpp"] == profile["SEMI"]
    assert options["ssg_step_lr"][-2:] == ["--label-iteration", iterations]  # labels never drawn
    assert options["ssgpp_label0"][-2:] == options["oracle"][-2:] == ["--label-iteration", "0"]


SELECTION = LabelledSelection(indices=np.array([4, 9, 1, 7, 3]), labels=np.array([10, 11, 10, 12, 11]),
                              num_labelled=2, true_ids=np.array([10, 11, 11, 12, 13]))


def test_no_propagation_keeps_the_labelled_set_alone():
    kept = labelled_only(SELECTION)
    assert kept.indices.tolist() == [4, 9] and kept.labels.tolist() == [10, 11] and kept.true_ids.tolist() == [10, 11]
    assert kept.summary() == {"labelled": 2, "propagated": 0, "propagated_accuracy": None}


def test_the_propagation_ceiling_gives_the_selected_images_their_true_identities():
    ceiling = true_labels(SELECTION)
    assert ceiling.indices.tolist() == SELECTION.indices.tolist()
    assert ceiling.labels.tolist() == [10, 11, 11, 12, 13]
    assert SELECTION.summary()["propagated_accuracy"] == pytest.approx(100 / 3)
    assert ceiling.summary()["propagated_accuracy"] == 100


def test_the_table_has_one_row_per_variant_with_as_many_cells_as_its_header():
    record = {"mAP": 40.0, "top1": 50.0, "propagated": 10, "propagated_accuracy": 90.0}
    runs = {1: {"before": {"mAP": 30.0, "top1": 40.0}, "iterations": [record, record]}}
    table = format_table({name: runs for name in VARIANTS}).splitlines()
    header, rows = table[0], table[2:2 + len(VARIANTS)]
    assert [row.split(" | ")[0] for row in rows] == [f"| {v.description}" for v in VARIANTS.values()]
    assert all(row.count("|") == header.count("|") for row in rows)
    assert rows[0].endswith("| 40.0 40.0 | 50.0 50.0 | 40.0 | 40.0 | 10 (90%) 10 (90%) |")
    assert table[-1] == "before adaptation: mAP 30.0, top-1 40.0"
