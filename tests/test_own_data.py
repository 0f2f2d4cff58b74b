"""Adapting to one's own crops: a folder target without identities or cameras, eps by the paper's rule, the
grouping's figures and pictures instead of mAP, SSG++'s annotation step, the report, and the model used after."""
import csv
import json
import shutil

import numpy as np
import pytest
from conftest import adapt_argv, assert_one_line, run
from PIL import Image

import selftraining
import semitraining
from reid import extract, report
from reid.cluster import format_rho
from reid.datasets import create
from reid.utils.errors import PAUSE_STATUS
from reid.utils.runtime import run_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def crops(tiny_pair, tmp_path_factory):
    """synth_b's training images under numbered names in nested folders (a third as grayscale PNGs), with
    nothing of an identity or camera in any name; and each copy's true identity."""
    root = tmp_path_factory.mktemp("crops") / "my cameras"
    identity = {}
    items = create("synth_b", str(tiny_pair / "synth_b"), verbose=False).trainval
    for number, (fname, pid, _) in enumerate(items):
        folder = root / f"day {number % 3}" / f"clip{number % 5}"
        folder.mkdir(parents=True, exist_ok=True)
        if number % 3 == 0:
            copy = folder / f"crop {number:05d}.png"
            Image.open(fname).convert("L").save(copy)
        else:
            copy = folder / f"crop_{number:05d}.jpg"
            shutil.copyfile(fname, copy)
        identity[str(copy.relative_to(root))] = pid
    return root, identity


def read_metrics(logs):
    return json.loads((logs / "metrics.json").read_text())


def test_selftraining_on_a_folder_records_the_grouping_instead_of_accuracy(tiny_pair, source_checkpoint, crops,
                                                                            tmp_path, capsys):
    root, identity = crops
    logs = tmp_path / "logs"
    argv = adapt_argv(tiny_pair, logs, source_checkpoint, "--tgt_dataset", f"folder:{root}", "--rho", "auto",
                      "--images-per-identity", "4")
    assert run(selftraining.main, argv, capsys)[0] == 0
    log = (logs / "log.txt").read_text()
    rho = 1.28 * (4 - 1) / (len(identity) - 1)
    assert f"rho {format_rho(rho)} by the paper's rule, 1.28 x (E - 1) / (N - 1) with 4 images per person among " \
           f"N = {len(identity)}" in log
    assert "nothing labelled to evaluate on" in log
    metrics = read_metrics(logs)
    assert list(metrics) == ["run", "iteration_0"]
    entry = metrics["iteration_0"]
    assert "mAP" not in entry and "pair_precision" not in entry
    assert entry["images_total"] == len(identity) and entry["images_kept"] <= len(identity)
    assert entry["kept_percent"] == pytest.approx(100 * entry["images_kept"] / len(identity))
    for name in ("global", "upper", "lower"):
        sizes = entry[f"cluster_sizes_{name}"]
        assert sum(sizes["histogram"].values()) == entry[f"clusters_{name}"]
    assert (logs / "clusters" / "iteration_0.png").is_file()
    assert (logs / "checkpoint.pth.tar").is_file() and not (logs / "model_best.pth.tar").exists()
    # the report judges such a run by its grouping, and the model flows on to new images
    capsys.readouterr()
    assert run_main(report.main, [str(logs)]) == 0
    printed = capsys.readouterr().out
    assert "nothing labelled to evaluate on" in printed and "grouping: clusters per feature type" in printed
    assert (logs / "grouping.png").is_file() and not (logs / "report.png").exists()
    status, _ = run(extract.main, ["--resume", str(logs), "--images", str(root), "--out", str(tmp_path / "f.h5"),
                                   "--workers", "0"], capsys)
    assert status == 0


def test_a_labelled_test_set_evaluates_a_folder_target(tiny_pair, source_checkpoint, crops, tmp_path, capsys):
    root, _ = crops
    argv = adapt_argv(tiny_pair, tmp_path, source_checkpoint, "--tgt_dataset", f"folder:{root}", "--test-dir",
                      str(tiny_pair / "synth_b"))
    assert run(selftraining.main, argv, capsys)[0] == 0
    metrics = read_metrics(tmp_path)
    assert {"mAP", "top1"} <= set(metrics["before"]) and {"mAP", "top1", "kept_percent"} <= set(
        metrics["iteration_0"])


def test_ssgpp_asks_a_person_for_the_labels_then_trains_on_them(tiny_pair, source_checkpoint, crops, tmp_path,
                                                                capsys):
    root, identity = crops
    logs = tmp_path / "logs"
    argv = adapt_argv(tiny_pair, logs, source_checkpoint, "--tgt_dataset", f"folder:{root}", "--label-iteration",
                      "0")
    status, lines = run(semitraining.main, argv, capsys)
    assert status == PAUSE_STATUS and len(lines) == 1 and "images to label" in lines[0]
    template = logs / "annotation" / "labels_template.csv"
    assert f"--labels {template}" in lines[0] and (logs / "annotation" / "sheet_001.png").is_file()
    assert "iteration_0" not in read_metrics(logs)
    with open(template, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert rows and all(row["person_id"] == "" for row in rows)
    for row in rows:  # a person writes who each drawn image shows
        row["person_id"] = f"person {identity[row['file']]}"
    with open(template, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["index", "file", "person_id"])
        writer.writeheader()
        writer.writerows(rows)
    assert run(semitraining.main, [*argv, "--labels", str(template)], capsys)[0] == 0
    entry = read_metrics(logs)["iteration_0"]
    assert entry["labelled"] == len(rows) and entry["propagated"] > 0 and entry["propagated_accuracy"] is None
    drawn = json.loads((logs / "labelled_set.json").read_text())["indices"]
    assert len(drawn) == len(rows) == len(np.unique(drawn))


def test_a_folder_target_refuses_what_cannot_act(tiny_pair, source_checkpoint, crops, tmp_path, capsys):
    root, _ = crops
    target = ["--tgt_dataset", f"folder:{root}"]
    for extra, fragments in (
            (["--rho", "auto"], ["--rho auto", "--images-per-identity"]),
            (["--evaluate"], ["--evaluate", "nothing labelled", "--test-dir"]),
            (["--images-per-identity", "4", "--rho", "0.01"], ["--rho 0.01", "--images-per-identity 4"])):
        status, lines = run(selftraining.main, adapt_argv(tiny_pair, tmp_path, source_checkpoint, *target, *extra),
                            capsys)
        assert_one_line(status, lines, *fragments)
    status, lines = run(semitraining.main, adapt_argv(tiny_pair, tmp_path, source_checkpoint, "--labels", "x.csv"),
                        capsys)
    assert_one_line(status, lines, "--labels x.csv", "synth_b carries its identities")
    status, lines = run(selftraining.main, adapt_argv(tiny_pair, tmp_path, source_checkpoint, "--test-dir",
                                                      str(tiny_pair)), capsys)
    assert_one_line(status, lines, "only a folder: or list: target takes one")
