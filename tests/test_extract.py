"""python -m reid.extract: the evaluation feature of any images, as evaluation computes it, in the HDF5 layout
of --save-features; model options from the checkpoint; unreadable images named and skipped or fatal."""
import os
import shutil
import warnings

import h5py
import numpy as np
import pytest
import torch
from conftest import run, write_small_checkpoint
from torch.utils.data import DataLoader

from reid import extract
from reid.feature_extraction import eval_features, extract_features, type_features
from reid.utils.runtime import Runtime
from tests.released_checkpoint import write_released_checkpoint

RUNTIME = Runtime(torch.device("cpu"))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    return folder, write_small_checkpoint(folder)


@pytest.fixture()
def images(tiny_pair, tmp_path):
    """A nested folder of 6 synthetic images, with a file that is not an image beside them."""
    folder = tmp_path / "photos"
    for index, source in enumerate(sorted((tiny_pair / "synth_b" / "query").iterdir())[:6]):
        target = folder / f"camera{index % 2}" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    (folder / "notes.txt").write_text("not an image")
    return folder


def read(fpath):
    with h5py.File(fpath, "r") as h5:
        group = h5["images"]
        return {name: group[name][()] for name in group}, dict(h5.attrs)


def test_features_of_a_folder_are_the_evaluation_features(small, images, tmp_path, capsys):
    folder, model = small
    out = tmp_path / "out" / "photos.h5"

    argv = ["--resume", str(folder), "--images", str(images), "--out", str(out), "--workers", "0", "--per-type"]
    status, _ = run(extract.main, argv, capsys)

    assert status == 0
    data, attrs = read(out)
    names = [name.decode() for name in data["fnames"]]
    assert len(names) == 6 and names == sorted(names) and all(name.endswith(".jpg") for name in names)
    items = [(name, -1, -1) for name in names]
    pooled = extract_features(model, items, RUNTIME, 64, 32, workers=0)
    assert data["features"].shape == (6, 3 * 512)
    assert np.abs(data["features"] - eval_features(pooled).numpy()).max() <= 1e-5
    for name, expected in zip(("global", "upper", "lower"), type_features(pooled)):
        assert np.abs(data[f"features_{name}"] - expected.numpy()).max() <= 1e-5
    assert (data["pids"] == -1).all() and (data["camids"] == -1).all()
    assert (attrs["arch"], attrs["height"], attrs["width"], attrs["num_split"]) == ("resnet18", 64, 32, 2)


def test_a_list_file_with_relative_paths(small, images, tmp_path, capsys):
    folder, model = small
    chosen = sorted(images.rglob("*.jpg"))[:2]
    listing = images / "list.txt"
    listing.write_text("\n".join(str(path.relative_to(images)) for path in chosen) + "\n\n")
    out = tmp_path / "listed.h5"

    argv = ["--resume", str(folder / "checkpoint.pth.tar"), "--images", str(listing), "--out", str(out),
            "--workers", "0"]
    status, _ = run(extract.main, argv, capsys)

    assert status == 0
    data, _ = read(out)
    assert [name.decode() for name in data["fnames"]] == [str(path) for path in chosen]
    assert "features_global" not in data
    assert np.abs(data["features"] - read_features(model, chosen)).max() <= 1e-5


def read_features(model, paths):
    return eval_features(extract_features(model, [(str(p), -1, -1) for p in paths], RUNTIME, 64, 32,
                                          workers=0)).numpy()


def test_an_unreadable_image_stops_or_is_skipped(small, images, tmp_path, capsys):
    folder, model = small
    victim = sorted(images.rglob("*.jpg"))[1]
    victim.write_bytes(victim.read_bytes()[:100])
    argv = ["--resume", str(folder), "--images", str(images), "--workers", "0"]

    status, lines = run(extract.main, [*argv, "--out", str(tmp_path / "stopped.h5")], capsys)
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and victim.name in lines[0]
    assert not (tmp_path / "stopped.h5").exists()

    status, lines = run(extract.main, [*argv, "--out", str(tmp_path / "skipped.h5"), "--on-error", "skip"], capsys)
    assert status == 0
    assert len(lines) == 1 and lines[0].startswith("skipped ") and victim.name in lines[0]
    data, _ = read(tmp_path / "skipped.h5")
    kept = [path for path in sorted(images.rglob("*.jpg")) if path != victim]
    assert [name.decode() for name in data["fnames"]] == [str(path) for path in kept]
    assert np.abs(data["features"] - read_features(model, kept)).max() <= 1e-5


@pytest.fixture()
def two_cores(monkeypatch):
    """A machine that reports 2 CPU cores, to torch's check of the worker count as to the project."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    return 2


@pytest.fixture()
def loader_workers(monkeypatch):
    """The ``num_workers`` of every DataLoader created during the test, in order."""
    created = []
    build = DataLoader.__init__

    def recording_build(loader, *args, **kwargs):
        build(loader, *args, **kwargs)
        created.append(loader.num_workers)

    monkeypatch.setattr(DataLoader, "__init__", recording_build)
    return created


def worker_warnings(caught) -> list[str]:
    return [str(warning.message) for warning in caught if "worker" in str(warning.message)]


@pytest.mark.slow
def test_the_default_workers_fit_a_two_core_machine(small, images, tmp_path, capsys, two_cores, loader_workers):
    """torch warns of "excessive worker creation" when a loader starts more workers than there are cores."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        argv = ["--resume", str(small[0]), "--images", str(images), "--out", str(tmp_path / "w.h5"),
                "--on-error", "skip"]
        status, _ = run(extract.main, argv, capsys)

    assert status == 0
    assert len(loader_workers) == 2 and all(0 < workers <= two_cores for workers in loader_workers)
    assert worker_warnings(caught) == []


@pytest.mark.slow
def test_the_evaluators_default_workers_fit_a_two_core_machine(small, images, two_cores, loader_workers):
    paths = sorted(images.rglob("*.jpg"))[:2]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        extract_features(small[1], [(str(path), -1, -1) for path in paths], RUNTIME, 64, 32)

    assert len(loader_workers) == 1 and 0 < loader_workers[0] <= two_cores
    assert worker_warnings(caught) == []


@pytest.mark.parametrize("make, message", [
    (lambda path: path / "missing", "no such folder or list file"),
    (lambda path: path, "no .jpg/.jpeg/.png/.bmp file"),
    (lambda path: (path / "empty.txt").write_text("\n") and path / "empty.txt", "the file lists none"),
])
def test_bad_images_option_is_one_line(small, tmp_path, capsys, make, message):
    images = make(tmp_path)
    argv = ["--resume", str(small[0]), "--images", str(images), "--out", str(tmp_path / "x.h5")]
    status, lines = run(extract.main, argv, capsys)
    assert status == 2 and len(lines) == 1 and message in lines[0] and str(images) in lines[0]


@pytest.mark.slow
def test_the_authors_released_file_gives_the_papers_feature(images, tmp_path, capsys):
    """No config in the authors' files: ResNet-50 at 256x128 with two stripes, a 6144-d feature."""
    released = tmp_path / "dukemtmc_trained.pth.tar"
    write_released_checkpoint(released, 702)
    listing = tmp_path / "two.txt"
    listing.write_text("\n".join(str(path) for path in sorted(images.rglob("*.jpg"))[:2]))

    status, _ = run(extract.main, ["--resume", str(released), "--images", str(listing), "--out", str(tmp_path / "r.h5"),
                     "--workers", "0"], capsys)

    assert status == 0
    data, attrs = read(tmp_path / "r.h5")
    assert data["features"].shape == (2, 6144)
    np.testing.assert_allclose(np.linalg.norm(data["features"], axis=1), 1, atol=1e-5)
    assert (attrs["arch"], attrs["height"], attrs["width"], attrs["num_split"]) == ("resnet50", 256, 128, 2)


def test_list_images_is_recursive_and_filters_extensions(tmp_path):
    for name in ("b/2.PNG", "a/1.jpg", "a/3.jpeg", "c/4.bmp", "c/5.gif", "6.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p[len(str(tmp_path)) + 1:] for p in extract.list_images(str(tmp_path))] == [
        "a/1.jpg", "a/3.jpeg", "b/2.PNG", "c/4.bmp"]
