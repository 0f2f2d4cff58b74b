"""The synthetic two-domain generator: determinism, Market-1501 layout, splits, domain gap, reuse."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import reid.datasets as datasets
from reid.datasets.market1501 import Market1501
from reid.datasets.pedestrians import STYLE_A, STYLE_B, make_identities
from reid.datasets.synthetic import DOMAIN_SIZES, FORMAT_VERSION, MARKER, domain_style, generate, main, read_meta
from reid.utils.errors import UserError
from reid.utils.runtime import run_main

SMALL = {"num_train_ids": 8, "num_test_ids": 6, "num_cameras": 3}
FOLDERS = ("bounding_box_train", "bounding_box_test", "query")


def files_of(root):
    """Every generated file, as paths relative to root."""
    paths = (os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names)
    return sorted(os.path.relpath(path, root) for path in paths)


def original_pid(fname):
    return int(os.path.basename(fname).split("_")[0])


def cameras_per_pid(samples):
    cameras = defaultdict(set)
    for _, pid, camid in samples:
        cameras[pid].add(camid)
    return cameras


def mean_pixels(root, folder="bounding_box_train"):
    names = sorted(os.listdir(os.path.join(root, folder)))
    return np.stack([np.asarray(Image.open(os.path.join(root, folder, name)), dtype=float) for name in names])


@pytest.fixture(scope="module")
def small_a(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synth") / "synth_a")
    generate(root, "synth_a", **SMALL)
    return root


@pytest.fixture(scope="module")
def small_b(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synth") / "synth_b")
    generate(root, "synth_b", **SMALL)
    return root


def test_same_seed_gives_the_same_bytes(small_a, tmp_path):
    again = str(tmp_path / "again")
    generate(again, "synth_a", **SMALL)
    assert files_of(again) == files_of(small_a)
    for relative in files_of(small_a):
        assert Path(small_a, relative).read_bytes() == Path(again, relative).read_bytes(), relative


def test_another_seed_gives_other_images(small_a, tmp_path):
    other = str(tmp_path / "other")
    generate(other, "synth_a", seed=1, **SMALL)
    assert files_of(other) != files_of(small_a)
    assert abs(mean_pixels(other).mean() - mean_pixels(small_a).mean()) > 0.5


def test_market_layout_names_and_crop_size(small_a):
    files = files_of(small_a)
    assert files[-1] == MARKER
    for relative in files[:-1]:
        folder, name = os.path.split(relative)
        assert folder in FOLDERS
        assert Market1501.name_pattern.fullmatch(os.path.splitext(name)[0]), name
        assert Image.open(os.path.join(small_a, relative)).size == (64, 128)


def test_marker_is_written_after_every_image(small_a):
    marker_time = os.stat(os.path.join(small_a, MARKER)).st_mtime_ns
    images = files_of(small_a)[:-1]
    image_times = [os.stat(os.path.join(small_a, relative)).st_mtime_ns for relative in images]
    assert marker_time >= max(image_times)


def test_create_generates_then_loads_through_the_market_loader(tmp_path, capsys):
    root = str(tmp_path / "synth_a")
    dataset = datasets.create("synth_a", root, **SMALL)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"generating synthetic domain synth_a in {root} ..."
    assert printed[1:] == dataset.summary().splitlines()
    assert isinstance(dataset, Market1501)
    assert dataset.name == "synth_a"
    assert dataset.num_trainval_ids == 8
    assert sorted({pid for _, pid, _ in dataset.trainval}) == list(range(8))
    assert dataset.num_query_ids == 6
    # Six test identities plus the distractor pid 0.
    assert dataset.num_gallery_ids == 7
    assert read_meta(root)["images"] == {
        "bounding_box_train": len(dataset.trainval),
        "bounding_box_test": len(dataset.gallery) + 2,
        "query": len(dataset.query),
    }


def test_train_and_test_identities_are_disjoint_and_numbered(small_a):
    train = {original_pid(name) for name in os.listdir(os.path.join(small_a, "bounding_box_train"))}
    test = {original_pid(name) for name in os.listdir(os.path.join(small_a, "query"))}
    assert train == set(range(1, 9))
    assert test == set(range(9, 15))


def test_every_identity_is_seen_by_two_to_three_cameras_with_two_to_four_images(small_a):
    dataset = datasets.create("synth_a", small_a, verbose=False)
    people = dataset.query + [sample for sample in dataset.gallery if sample[1] != 0]
    for samples in (dataset.trainval, people):
        for cameras in cameras_per_pid(samples).values():
            assert 2 <= len(cameras) <= 3
        images = defaultdict(int)
        for _, pid, camid in samples:
            images[pid, camid] += 1
        assert set(images.values()) <= {2, 3, 4}


def test_query_holds_one_image_per_test_identity_and_camera(small_a):
    dataset = datasets.create("synth_a", small_a, verbose=False)
    query_pairs = [(pid, camid) for _, pid, camid in dataset.query]
    assert len(query_pairs) == len(set(query_pairs))
    gallery_pairs = {(pid, camid) for _, pid, camid in dataset.gallery if pid != 0}
    # Each query keeps a same-camera image and an other-camera image of its identity in the gallery.
    assert set(query_pairs) == gallery_pairs
    for pid, camid in query_pairs:
        assert any(other_pid == pid and other_camid != camid for other_pid, other_camid in gallery_pairs)


def test_distractors_and_junk_are_written_and_handled(small_a):
    test_names = os.listdir(os.path.join(small_a, "bounding_box_test"))
    distractors = [name for name in test_names if name.startswith("0000_")]
    junk = [name for name in test_names if name.startswith("-1_")]
    # max(2, num_test_ids // 4) distractors and max(2, num_test_ids // 8) junk images.
    assert (len(distractors), len(junk)) == (2, 2)
    dataset = datasets.create("synth_a", small_a, verbose=False)
    assert len(dataset.gallery) == len(test_names) - 2
    assert sorted(os.path.basename(f) for f, pid, _ in dataset.gallery if pid == 0) == sorted(distractors)
    assert all(pid >= 0 for _, pid, _ in dataset.gallery)


def test_domains_differ_in_colour_statistics(small_a, small_b):
    pixels_a, pixels_b = mean_pixels(small_a), mean_pixels(small_b)
    saturation_a = (pixels_a.max(-1) - pixels_a.min(-1)).mean()
    saturation_b = (pixels_b.max(-1) - pixels_b.min(-1)).mean()
    # B is darker (gain 0.85, gamma 1.25) and dresses from a washed-out palette.
    assert pixels_a.mean() - pixels_b.mean() > 25
    assert saturation_a - saturation_b > 5
    names_a = set(os.listdir(os.path.join(small_a, "bounding_box_train")))
    names_b = set(os.listdir(os.path.join(small_b, "bounding_box_train")))
    assert names_a != names_b


def test_existing_domain_is_reused_without_regeneration(tmp_path, capsys):
    root = tmp_path / "synth_a"
    first = datasets.create("synth_a", str(root), verbose=False, **SMALL)
    removed = first.trainval[0][0]
    os.remove(removed)
    again = datasets.create("synth_a", str(root), num_train_ids=3, num_test_ids=2)
    assert "generating" not in capsys.readouterr().out
    assert not os.path.exists(removed)
    assert len(again.trainval) == len(first.trainval) - 1
    assert again.num_query_ids == 6


def test_a_folder_of_an_older_format_is_refused(tmp_path):
    root = tmp_path / "synth_b"
    datasets.create("synth_b", str(root), verbose=False, **SMALL)
    meta = read_meta(str(root))
    meta["format_version"] = FORMAT_VERSION - 1
    (root / MARKER).write_text(json.dumps(meta))
    with pytest.raises(UserError, match=f"written by format {FORMAT_VERSION - 1} .* delete {root} to regenerate"):
        datasets.create("synth_b", str(root))


def test_each_domain_has_its_own_default_size(tmp_path):
    for domain in ("synth_a", "synth_b"):
        meta = generate(str(tmp_path / domain), domain, num_train_ids=2, num_test_ids=1)
        assert meta["options"]["images_per_camera"] == list(DOMAIN_SIZES[domain]["images_per_camera"])
    assert DOMAIN_SIZES["synth_a"]["images_per_camera"] != DOMAIN_SIZES["synth_b"]["images_per_camera"]


def test_folder_of_the_other_domain_is_refused(small_a):
    with pytest.raises(UserError, match=f"{MARKER}: holds domain synth_a, not synth_b"):
        datasets.create("synth_b", small_a)


def test_generation_refuses_folders_holding_images(small_a, tmp_path):
    with pytest.raises(UserError, match="already holds a generated domain"):
        generate(small_a, "synth_a", **SMALL)
    os.makedirs(tmp_path / "query")
    Image.new("RGB", (4, 8)).save(tmp_path / "query" / "0001_c1s1_000001_01.jpg")
    with pytest.raises(UserError, match=f"{tmp_path / 'query'}: not empty but .* has no {MARKER}"):
        generate(str(tmp_path), "synth_a", **SMALL)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_cameras": 1}, "num_cameras: expected at least 2"),
        ({"images_per_camera": (1, 3)}, r"images_per_camera: expected \(low, high\) with 2 <= low <= high"),
        ({"num_test_ids": 0}, "num_train_ids, num_test_ids: expected at least 1 each"),
        ({"shift": -1.0}, "shift: expected a number >= 0"),
    ],
)
def test_bad_options_are_refused(tmp_path, options, message):
    with pytest.raises(UserError, match=message):
        generate(str(tmp_path), "synth_a", **dict(SMALL, **options))
    assert not os.listdir(tmp_path)


def test_shift_blends_the_style_of_b_from_a():
    assert domain_style("synth_a") == STYLE_A
    assert domain_style("synth_b") == STYLE_B
    assert domain_style("synth_b", shift=0.0) == STYLE_A
    half = domain_style("synth_b", shift=0.5)
    assert half.noise == pytest.approx(4.0)
    assert half.saturation == pytest.approx(0.775)
    assert domain_style("synth_b", shift=2.0).clutter == pytest.approx(2.0)
    with pytest.raises(UserError, match="unknown synthetic domain 'synth_c'"):
        domain_style("synth_c")


def test_people_share_one_garment_but_never_both():
    people = make_identities(np.random.default_rng(0), range(1, 251), STYLE_A)
    pairs = [(person.upper.index, person.lower.index) for person in people]
    assert len(set(pairs)) == 250
    # Garment pools of ceil(0.5 * 250) = 125 pieces each.
    assert max(max(pair) for pair in pairs) < 125
    same_upper = sum(a[0] == b[0] for i, a in enumerate(pairs) for b in pairs[i + 1 :])
    same_lower = sum(a[1] == b[1] for i, a in enumerate(pairs) for b in pairs[i + 1 :])
    assert same_upper > 50
    assert same_lower > 50


def test_command_line_generates_a_domain(tmp_path, capsys):
    argv = ["--root", str(tmp_path), "--domain", "synth_b", "--num-train-ids", "3", "--num-test-ids", "2",
            "--num-cameras", "2", "--images-per-camera", "2", "2"]
    assert run_main(main, argv) == 0
    meta = read_meta(str(tmp_path))
    assert meta["domain"] == "synth_b"
    assert meta["options"]["images_per_camera"] == [2, 2]
    # 3 train ids x 2 cameras x 2 images; 2 test ids x 2 cameras: 4 queries, 4 gallery + 2 + 2 others.
    assert meta["images"] == {"bounding_box_train": 12, "bounding_box_test": 8, "query": 4}
    assert capsys.readouterr().out.startswith(f"synth_b written to {tmp_path}")
    assert run_main(main, argv) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}: already holds a generated domain")
