"""The whole-iteration benchmark: Market-1501's counts, its data and a run at a tiny scale on the CPU."""
import filecmp
import json
import os
from collections import Counter

import pytest

from benchmarks import pipeline
from reid.datasets.market1501 import Market1501
from reid.utils.errors import UserError

TINY = ["--scale", "0.005", "-a", "resnet18", "--height", "64", "--width", "32", "-b", "8", "--bn-group-size", "4",
        "--epochs", "2", "-j", "0", "--device", "cpu", "--gen-processes", "2"]


def test_scale_one_plans_market_1501_and_a_duke_sized_source():
    counts = pipeline.Counts().scaled(1)
    target, source = pipeline.target_plan(counts), pipeline.source_plan(counts)
    folders = Counter(spec.folder for spec in target)
    assert folders == {"bounding_box_train": 12_936, "query": 3_368, "bounding_box_test": 15_913}
    assert len({spec.pid for spec in target if spec.folder == "bounding_box_train"}) == 751
    assert len({spec.pid for spec in target if spec.folder == "query"}) == 750
    assert sum(spec.pid == 0 for spec in target) == 2_793
    assert len(source) == 16_522 and len({spec.pid for spec in source}) == 702
    assert all(Market1501.name_pattern.fullmatch(spec.fname[:-4]) for spec in target + source)
    assert len({spec.fname for spec in target}) == len(target)


def test_every_query_has_a_true_match_in_another_camera():
    target = pipeline.target_plan(pipeline.Counts().scaled(0.05))
    gallery_cameras = {}
    for spec in target:
        if spec.folder == "bounding_box_test":
            gallery_cameras.setdefault(spec.pid, set()).add(spec.camera)
    queries = [spec for spec in target if spec.folder == "query"]
    assert queries and all(gallery_cameras[q.pid] - {q.camera} for q in queries)


@pytest.mark.parametrize("scale", [0.001, 0, -1, 10])
def test_impossible_scales_are_refused(scale):
    with pytest.raises(UserError, match="--scale"):
        pipeline.Counts().scaled(scale)


def test_busy_fraction_is_the_union_of_gpu_intervals_over_the_wall_time():
    events = [{"cat": "kernel", "ts": 0, "dur": 10}, {"cat": "gpu_memcpy", "ts": 5, "dur": 10},
              {"cat": "kernel", "ts": 20, "dur": 5}, {"cat": "cpu_op", "ts": 0, "dur": 40},
              {"cat": "kernel", "ts": 21, "dur": 2}, {"cat": "ac2g", "ts": 30}]
    assert pipeline.busy_fraction(events, pipeline.GPU_CATEGORIES, 40.0) == pytest.approx(20 / 40)
    assert pipeline.busy_fraction(events[3:4], pipeline.GPU_CATEGORIES, 40.0) is None


@pytest.mark.slow
def test_tiny_scale_runs_on_the_cpu_and_projects_a_whole_run(tmp_path, capsys):
    record_path = tmp_path / "pipeline.json"
    pipeline.main([*TINY, "--data-dir", str(tmp_path / "data"), "--json", str(record_path)])
    record = json.loads(record_path.read_text())
    assert record["sizes"] == {"source": 83, "target": 65, "query": 17, "gallery": 80}
    assert record["generation"]["images"] == 245 and not record["generation"]["reused"]
    seconds, training, projected = record["seconds"], record["training"], record["projected"]
    assert training["batches_per_epoch"] == 2  # 4 identities, 2 per batch of 8
    assert all(value > 0 for value in seconds.values())
    assert list(record["grouping"]["eps"]) == ["global", "upper", "lower"]
    assert all(eps > 0 for eps in record["grouping"]["eps"].values())
    # each iteration: a new loader's first epoch on the warm model + 69 later ones; the warm-up once per run
    epochs = seconds["epoch 0, next iteration"] + 69 * training["later_epoch_s"]
    assert training["later_epoch_s"] == seconds["epoch 1"]
    warm_up = max(0.0, seconds["epoch 0"] - seconds["epoch 0, next iteration"])
    assert projected["warm_up_s"] == pytest.approx(warm_up)
    iteration = (seconds["source features"] + seconds["target features"] + projected["grouping_s"] + epochs
                 + seconds["evaluation"] + seconds["checkpoint"])
    assert projected["iteration_s"] == pytest.approx(iteration)
    assert projected["grouping_s"] == seconds["grouping"]  # eps frozen, as every later iteration
    eps = max(0.0, seconds["grouping, first iteration"] - seconds["grouping"])  # once per run
    assert projected["eps_s"] == pytest.approx(eps)
    assert projected["run_30_min"] == pytest.approx((seconds["evaluation"] + eps + warm_up + 30 * iteration) / 60)
    printed = capsys.readouterr().out
    assert "a 30-iteration run, projected" in printed and "not measured on the CPU" in printed

    # the data are reused, and one process renders the very same JPEGs as two
    counts = pipeline.Counts().scaled(0.005)
    root, generation = pipeline.prepare_data(str(tmp_path / "data"), counts, 0.005, processes=2)
    assert generation == {"reused": True}
    alone, _ = pipeline.prepare_data(str(tmp_path / "alone"), counts, 0.005, processes=1)
    for folder in ("target/query", "source/bounding_box_train"):
        names = sorted(os.listdir(os.path.join(root, folder)))
        assert names == sorted(os.listdir(os.path.join(alone, folder)))
        assert all(filecmp.cmp(os.path.join(root, folder, name), os.path.join(alone, folder, name), shallow=False)
                   for name in names)
