"""The dataset loaders on miniature trees with the real layouts and file names (see dataset_trees.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from dataset_trees import (
    CUHK03_FILES,
    DUKE_FILES,
    MARKET_FILES,
    write_files,
    write_image,
    write_market_style,
    write_msmt,
)
from PIL import Image

import reid.datasets as datasets
from reid.arguments import add_data_args, source_parser
from reid.datasets.base import split_validation
from reid.experiment import open_dataset
from reid.utils.cli import ArgumentParser
from reid.utils.errors import UserError


def pids(samples):
    return [pid for _, pid, _ in samples]


def camids(samples):
    return [camid for _, _, camid in samples]


def basenames(samples):
    return [os.path.basename(fname) for fname, _, _ in samples]


def test_names_lists_every_dataset():
    assert datasets.names() == ["market1501", "dukemtmc", "msmt17", "cuhk03", "synth_a", "synth_b"]


@pytest.mark.parametrize("nesting", ["", "Market-1501-v15.09.15"])
def test_market_counts_relabelling_and_cameras(tmp_path, nesting):
    root = tmp_path / "market1501"
    write_market_style(str(root / nesting), MARKET_FILES)
    dataset = datasets.create("market1501", str(root), verbose=False)

    assert dataset.name == "market1501"
    assert dataset.images_dir == str(root / nesting).rstrip(os.sep)
    # Training pids 2, 7, 15 become 0, 1, 2; Thumbs.db is ignored.
    assert pids(dataset.trainval) == [0, 0, 1, 1, 2]
    assert camids(dataset.trainval) == [0, 1, 0, 5, 2]
    assert dataset.num_trainval_ids == 3
    assert pids(dataset.query) == [3, 11]
    assert camids(dataset.query) == [0, 5]
    assert dataset.num_query_ids == 2
    # The two junk images (-1) are dropped, the two distractors (0000) kept with pid 0.
    assert basenames(dataset.gallery) == MARKET_FILES["bounding_box_test"][2:7]
    assert pids(dataset.gallery) == [0, 0, 3, 3, 11]
    assert camids(dataset.gallery) == [0, 3, 1, 3, 4]
    assert dataset.num_gallery_ids == 3
    for fname, _, _ in dataset.trainval + dataset.query + dataset.gallery:
        assert os.path.isabs(fname)
        assert Image.open(fname).size == (4, 8)


def test_summary_is_printed_when_verbose(tmp_path, capsys):
    write_market_style(str(tmp_path), MARKET_FILES)
    dataset = datasets.create("market1501", str(tmp_path))
    printed = capsys.readouterr().out
    assert printed == dataset.summary() + "\n"
    lines = dataset.summary().splitlines()
    assert lines[0] == f"market1501 ({tmp_path})"
    assert [line.split("|") for line in lines[3:]] == [
        ["  trainval ", "      3 ", "        5"],
        ["  query    ", "      2 ", "        2"],
        ["  gallery  ", "      3 ", "        5"],
    ]
    datasets.create("market1501", str(tmp_path), verbose=False)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("nesting", ["", "DukeMTMC-reID"])
def test_duke_counts_relabelling_and_cameras(tmp_path, nesting):
    write_market_style(str(tmp_path / nesting), DUKE_FILES)
    dataset = datasets.create("dukemtmc", str(tmp_path), verbose=False)
    assert pids(dataset.trainval) == [0, 0, 1]
    assert camids(dataset.trainval) == [1, 5, 7]
    assert pids(dataset.query) == [2]
    assert camids(dataset.query) == [4]
    assert pids(dataset.gallery) == [2, 2, 100]
    assert camids(dataset.gallery) == [0, 6, 2]
    assert (dataset.num_trainval_ids, dataset.num_query_ids, dataset.num_gallery_ids) == (2, 1, 2)


@pytest.mark.parametrize("nesting", ["cuhk03-np", ""])
def test_cuhk03_detected_by_default_and_labeled_on_request(tmp_path, nesting):
    for boxes, files in CUHK03_FILES.items():
        write_market_style(str(tmp_path / nesting / boxes), files)
    detected = datasets.create("cuhk03", str(tmp_path), verbose=False)
    labeled = datasets.create("cuhk03", str(tmp_path), labeled=True, verbose=False)

    assert detected.images_dir == str(tmp_path / nesting / "detected")
    assert pids(detected.trainval) == [0, 0, 1]
    assert camids(detected.trainval) == [0, 1, 0]
    assert pids(detected.query) == [2, 3]
    assert camids(detected.query) == [1, 0]
    assert pids(detected.gallery) == [2, 2, 3]
    assert camids(detected.gallery) == [0, 1, 1]
    assert labeled.images_dir == str(tmp_path / nesting / "labeled")
    assert (len(labeled.trainval), len(labeled.query), len(labeled.gallery)) == (4, 1, 2)
    assert camids(labeled.trainval) == [0, 1, 0, 1]
    assert all(fname.endswith(".png") for fname, _, _ in detected.gallery + labeled.gallery)


def test_the_command_line_chooses_cuhk03s_boxes(tmp_path):
    for boxes, files in CUHK03_FILES.items():
        write_market_style(str(tmp_path / "cuhk03" / "cuhk03-np" / boxes), files)
    parser = source_parser("")
    for options, boxes in (([], "detected"), (["--cuhk03-labeled"], "labeled"), (["--cuhk03_labeled"], "labeled")):
        args = parser.parse_args(["--dataset", "cuhk03", "--data_dir", str(tmp_path), *options])
        assert open_dataset("cuhk03", args).images_dir == str(tmp_path / "cuhk03" / "cuhk03-np" / boxes)


@pytest.mark.parametrize(
    ("nesting", "train_folder", "test_folder"),
    [("", "train", "test"), ("MSMT17_V1", "train", "test"), ("MSMT17_V2", "mask_train_v2", "mask_test_v2")],
)
def test_msmt17_reads_the_list_files(tmp_path, nesting, train_folder, test_folder):
    write_msmt(str(tmp_path / nesting), train_folder, test_folder)
    dataset = datasets.create("msmt17", str(tmp_path), combine_val=True, verbose=False)

    # list_train (pids 0, 3) then list_val (pids 0, 1): original pids 0, 1, 3 become 0, 1, 2.
    assert basenames(dataset.trainval) == [
        "0000_000_01_0303morning_0015_0.jpg",
        "0003_000_15_0304noon_0100_0.jpg",
        "0000_001_05_0303noon_0020_1.jpg",
        "0001_000_02_0303morning_0030_0.jpg",
    ]
    assert pids(dataset.trainval) == [0, 2, 0, 1]
    assert camids(dataset.trainval) == [0, 14, 4, 1]
    assert dataset.num_trainval_ids == 3
    first_image = tmp_path / nesting / train_folder / "0000" / "0000_000_01_0303morning_0015_0.jpg"
    assert dataset.trainval[0][0] == str(first_image)
    # Test pids are kept as listed, pid 0 included (a real person in MSMT17).
    assert pids(dataset.query) == [0]
    assert camids(dataset.query) == [3]
    assert pids(dataset.gallery) == [0, 2]
    assert camids(dataset.gallery) == [6, 11]
    assert os.path.dirname(os.path.dirname(dataset.gallery[0][0])) == str(tmp_path / nesting / test_folder)


def test_msmt17_trains_on_list_train_alone_by_default_as_the_released_code(tmp_path):
    write_msmt(str(tmp_path))
    dataset = datasets.create("msmt17", str(tmp_path), verbose=False)
    assert pids(dataset.trainval) == [0, 1]
    assert camids(dataset.trainval) == [0, 14]
    # list_val selects the source model, as released; with combine_val it is trained on instead.
    assert basenames(dataset.val) == ["0000_001_05_0303noon_0020_1.jpg", "0001_000_02_0303morning_0030_0.jpg"]
    assert pids(dataset.val) == [0, 1]
    assert datasets.create("msmt17", str(tmp_path), combine_val=True, verbose=False).val is None


def test_msmt_list_val_option_reaches_the_dataset(tmp_path):
    write_msmt(str(tmp_path / "msmt17"))
    parser = ArgumentParser()
    add_data_args(parser, cross_domain=True, batch_size=128, num_instances=4)
    for argv, images in (([], 2), (["--msmt_list_val"], 4)):
        args = parser.parse_args(["--data-dir", str(tmp_path), *argv])
        assert len(open_dataset("msmt17", args).trainval) == images


def original_pids(samples):
    return {int(fname.split("_")[0]) for fname, _, _ in samples}


@pytest.mark.parametrize("seed", [1, 2])
def test_validation_split_holds_out_whole_identities(seed):
    trainval = [(f"{pid}_{image}.jpg", pid, image % 2) for pid in range(300) for image in range(3)]
    train, val = split_validation(trainval, 100, seed)
    assert len(original_pids(val)) == 100 and len(val) == 300
    assert sorted({pid for _, pid, _ in train}) == list(range(200))  # both relabelled 0..K-1
    assert sorted({pid for _, pid, _ in val}) == list(range(100))
    assert original_pids(train).isdisjoint(original_pids(val))
    # The release: np.random.seed(seed), shuffle the ascending ids, the last ones validate.
    assert original_pids(val) == set(np.random.RandomState(seed).permutation(300)[-100:].tolist())
    assert split_validation(trainval, 100, seed) == (train, val)  # seeded
    assert original_pids(split_validation(trainval, 100, seed + 10)[1]) != original_pids(val)


@pytest.mark.parametrize(("num_ids", "num_val", "held_out"),
                         [(751, 0.1, 75), (702, 0.1, 70), (150, 0.1, 15), (80, 0.25, 20), (751, 100, 100)])
def test_num_val_is_a_share_of_the_identities_or_a_count(num_ids, num_val, held_out):
    trainval = [(f"{pid}_0.jpg", pid, 0) for pid in range(num_ids)]
    _, val = split_validation(trainval, num_val, 1)
    assert len(val) == held_out  # Market 75 of 751, Duke 70 of 702 at the release's num_val=0.1


@pytest.mark.parametrize(("num_val", "expected"), [(0.001, "between 1 and 299"), (300, "between 1 and 299"),
                                                   (2.5, "a fraction below 1 or a whole number")])
def test_validation_split_needs_identities_on_both_sides(num_val, expected):
    trainval = [(f"{pid}.jpg", pid, 0) for pid in range(300)]
    with pytest.raises(UserError, match=f"--num-val {num_val:g}: expected {expected}"):
        split_validation(trainval, num_val, 1)


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(UserError) as error:
        datasets.create("market", str(tmp_path))
    assert str(error.value) == (
        "unknown dataset 'market': expected one of market1501, dukemtmc, msmt17, cuhk03, synth_a, synth_b"
    )


def test_missing_market_folder_says_what_is_expected(tmp_path):
    root = tmp_path / "market1501"
    with pytest.raises(UserError) as error:
        datasets.create("market1501", str(root))
    assert str(error.value) == (
        f"{root}: expected a Market-1501 folder with bounding_box_train/, bounding_box_test/ and query/ "
        "(directly or inside Market-1501-v15.09.15/)"
    )


@pytest.mark.parametrize("layout", ["no query folder", "unknown nesting"])
def test_wrong_market_layout_is_refused(tmp_path, layout):
    if layout == "no query folder":
        files = {folder: names for folder, names in MARKET_FILES.items() if folder != "query"}
        write_market_style(str(tmp_path), files)
    else:
        write_market_style(str(tmp_path / "Market-1501"), MARKET_FILES)
    with pytest.raises(UserError, match=r"expected a Market-1501 folder with bounding_box_train/"):
        datasets.create("market1501", str(tmp_path))


def test_other_layout_errors_name_the_datasets_folders(tmp_path):
    with pytest.raises(UserError) as duke:
        datasets.create("dukemtmc", str(tmp_path))
    assert str(duke.value).endswith("(directly or inside DukeMTMC-reID/)")
    write_market_style(str(tmp_path / "cuhk03-np" / "detected"), CUHK03_FILES["detected"])
    with pytest.raises(UserError) as cuhk:
        datasets.create("cuhk03", str(tmp_path), labeled=True)
    assert str(cuhk.value) == (
        f"{tmp_path}: expected a CUHK03-NP (labeled) folder with bounding_box_train/, bounding_box_test/ and "
        "query/ (inside cuhk03-np/labeled/ or labeled/)"
    )
    with pytest.raises(UserError) as msmt:
        datasets.create("msmt17", str(tmp_path))
    assert str(msmt.value) == (
        f"{tmp_path}: expected an MSMT17 folder with train/ and test/ (V2: mask_train_v2/ and mask_test_v2/) "
        "and list_train.txt, list_val.txt, list_query.txt, list_gallery.txt "
        "(directly or inside MSMT17_V1/ or MSMT17_V2/)"
    )


def test_folder_without_image_is_an_empty_subset(tmp_path):
    files = dict(MARKET_FILES, query=["Thumbs.db"])
    write_market_style(str(tmp_path), files)
    with pytest.raises(UserError) as error:
        datasets.create("market1501", str(tmp_path))
    assert str(error.value) == f"{tmp_path / 'query'}: no usable image (junk images, pid -1, are not counted)"


def test_folder_of_junk_only_is_an_empty_subset(tmp_path):
    files = dict(MARKET_FILES, bounding_box_train=["-1_c1s1_000401_03.jpg"])
    write_market_style(str(tmp_path), files)
    with pytest.raises(UserError, match="bounding_box_train: no usable image"):
        datasets.create("market1501", str(tmp_path))


def test_image_with_a_foreign_name_is_refused_but_other_files_ignored(tmp_path):
    write_market_style(str(tmp_path), MARKET_FILES)
    write_files(str(tmp_path / "query"), ["readme.txt", "0003_c1s1_000610_00.jpg.bak"])
    assert len(datasets.create("market1501", str(tmp_path), verbose=False).query) == 2
    write_image(str(tmp_path / "query" / "0001_c1_f0000001.jpg"))
    with pytest.raises(UserError) as error:
        datasets.create("market1501", str(tmp_path))
    assert str(error.value) == (
        f"{tmp_path / 'query' / '0001_c1_f0000001.jpg'}: expected an image name like "
        "PPPP_cCsS_FFFFFF_NN.jpg (0002_c1s1_000451_03.jpg)"
    )


def test_camera_zero_is_not_a_market_name(tmp_path):
    write_market_style(str(tmp_path), dict(MARKET_FILES, query=["0003_c0s1_000610_00.jpg"]))
    with pytest.raises(UserError, match="0003_c0s1_000610_00.jpg: expected an image name like"):
        datasets.create("market1501", str(tmp_path))


def test_msmt17_list_errors_name_the_line(tmp_path):
    write_msmt(str(tmp_path))
    list_train = tmp_path / "list_train.txt"
    good_line = list_train.read_text().splitlines()[0]

    list_train.write_text(good_line + "\n0003/0003_000_15_0304noon_0100_0.jpg\n")
    with pytest.raises(UserError) as malformed:
        datasets.create("msmt17", str(tmp_path))
    assert str(malformed.value) == (
        f"{list_train}:2: expected 'relative/path pid', got '0003/0003_000_15_0304noon_0100_0.jpg'"
    )

    list_train.write_text(good_line + "\n0003/0003_c1_f01.jpg 3\n")
    with pytest.raises(UserError, match=r"list_train.txt:2: expected an image name like PPPP_III_CC_"):
        datasets.create("msmt17", str(tmp_path))

    list_train.write_text(good_line + "\n0009/0009_000_03_0304noon_0100_0.jpg 9\n")
    with pytest.raises(UserError) as missing:
        datasets.create("msmt17", str(tmp_path))
    missing_path = tmp_path / "train" / "0009" / "0009_000_03_0304noon_0100_0.jpg"
    assert str(missing.value) == f"{list_train}:2: {missing_path} does not exist"

    list_train.write_text("\n")
    with pytest.raises(UserError, match=r"list_train.txt: no usable image"):
        datasets.create("msmt17", str(tmp_path))


def test_error_messages_are_one_line(tmp_path):
    write_market_style(str(tmp_path), dict(MARKET_FILES, query=["Thumbs.db"]))
    for name in ("market1501", "dukemtmc", "msmt17", "cuhk03", "nope"):
        with pytest.raises(UserError) as error:
            datasets.create(name, str(tmp_path))
        assert "\n" not in str(error.value)
