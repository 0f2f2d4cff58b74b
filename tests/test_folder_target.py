"""A target without labels: folder:PATH and list:FILE specs, their images converted to RGB as read, the optional
labelled test folder, and one line for every bad input."""
import argparse
import random
import shutil

import numpy as np
import pytest
from PIL import Image

from reid import datasets
from reid.datasets.folder import UNKNOWN_CAMID, UNKNOWN_PID, UnlabelledImages, list_images
from reid.utils.cli import ArgumentParser
from reid.utils.data.preprocessor import ALPHA_BACKGROUND, read_image
from reid.utils.errors import UserError
from tests.dataset_trees import MARKET_FILES, write_market_style

RED = (200, 30, 40)


def save(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture()
def crops(tmp_path):
    """Nested crops in every colour mode and odd names; a text file and a hidden sub-folder's file beside them."""
    root = tmp_path / "my crops"
    rgba = Image.new("RGBA", (8, 16), (*RED, 255))
    rgba.putpixel((0, 0), (255, 255, 255, 0))  # fully transparent: a hidden white pixel
    rgba.putpixel((1, 0), (255, 255, 255, 128))  # half transparent white
    palette = Image.new("P", (8, 16), 1)
    palette.putpalette([0, 0, 0, *RED])
    palette.putpixel((0, 0), 0)
    palette.info["transparency"] = 0
    grey16 = Image.fromarray(np.full((16, 8), 65535, dtype=np.uint16))
    grey16.putpixel((0, 0), 257 * 100)
    files = {
        "cam 1/Zoë é.png": Image.new("L", (8, 16), 77),
        "cam 1/day/0001.jpg": Image.new("RGB", (8, 16), RED),
        "cam 2/day/0001.jpg": Image.new("RGB", (8, 16), RED),  # the same name in another folder: another image
        "cam 2/alpha.png": rgba,
        "cam 2/la.png": Image.new("LA", (8, 16), (90, 0)),
        "cam 2/palette.png": palette,
        "cam 3/deep/er/grey16.png": grey16,
        "cam 3/UPPER.JPG": Image.new("RGB", (8, 16), RED),
        "top.bmp": Image.new("RGB", (8, 16), RED),
    }
    for name, image in files.items():
        save(root / name, image)
    (root / "cam 1" / "notes.txt").write_text("not an image")
    return root


def test_a_folder_target_lists_every_crop_with_unknown_ids(crops, capsys):
    dataset = datasets.create(f"folder:{crops}", "ignored")

    names = [str(path)[len(str(crops)) + 1:] for path, _, _ in dataset.trainval]
    assert names == ["cam 1/Zoë é.png", "cam 1/day/0001.jpg", "cam 2/alpha.png", "cam 2/day/0001.jpg",
                     "cam 2/la.png", "cam 2/palette.png", "cam 3/UPPER.JPG", "cam 3/deep/er/grey16.png", "top.bmp"]
    assert {(pid, camid) for _, pid, camid in dataset.trainval} == {(UNKNOWN_PID, UNKNOWN_CAMID)}
    assert dataset.query == [] and dataset.gallery == []
    assert dataset.has_labels is False and dataset.name == f"folder:{crops}"
    assert datasets.ReIDDataset.has_labels is True  # every named dataset
    output = capsys.readouterr().out
    assert f"folder:{crops}" in output and "|      ? |        9" in output
    assert "nothing labelled to evaluate on" in output


def test_every_colour_mode_is_read_as_rgb_transparency_on_a_neutral_background(crops):
    pixels = {path.name: np.asarray(read_image(str(path))) for path in crops.rglob("*") if path.suffix != ".txt"
              and path.is_file()}

    assert all(p.shape == (16, 8, 3) and p.dtype == np.uint8 for p in pixels.values())
    assert (pixels["Zoë é.png"] == 77).all()  # greyscale repeated on the three channels
    alpha = pixels["alpha.png"]
    assert tuple(alpha[0, 0]) == ALPHA_BACKGROUND == (124, 116, 104)  # not the white hidden under alpha 0
    assert tuple(alpha[0, 1]) == tuple(round((255 * 128 + b * 127) / 255) for b in ALPHA_BACKGROUND)
    assert tuple(alpha[5, 5]) == RED
    assert (pixels["la.png"] == ALPHA_BACKGROUND).all()  # alpha 0 everywhere
    assert tuple(pixels["palette.png"][0, 0]) == ALPHA_BACKGROUND and tuple(pixels["palette.png"][1, 1]) == RED
    assert tuple(pixels["grey16.png"][0, 0]) == (100,) * 3 and tuple(pixels["grey16.png"][1, 1]) == (255,) * 3


def test_a_list_target_reads_relative_and_absolute_paths(crops, tmp_path):
    listing = crops / "cam 2" / "some.txt"
    listing.write_text(f"day/0001.jpg\n\n{crops / 'cam 1' / 'Zoë é.png'}\nalpha.png\n")

    dataset = UnlabelledImages(f"list:{listing}", verbose=False)

    assert [path for path, _, _ in dataset.trainval] == [str(crops / name) for name in (
        "cam 2/day/0001.jpg", "cam 1/Zoë é.png", "cam 2/alpha.png")]
    assert dataset.images_dir == str(crops / "cam 2")


def test_a_labelled_test_folder_gives_a_query_and_gallery(crops, tmp_path):
    test_dir = tmp_path / "labelled"
    write_market_style(str(test_dir), {k: v for k, v in MARKET_FILES.items() if k != "bounding_box_train"})

    dataset = datasets.create(f"folder:{crops}", "", verbose=False, test_dir=str(test_dir))

    assert [(p.rsplit("/", 1)[1], pid, cam) for p, pid, cam in dataset.query] == [
        ("0003_c1s1_000610_00.jpg", 3, 0), ("0011_c6s1_000720_00.jpg", 11, 5)]
    assert len(dataset.gallery) == 5 and dataset.num_gallery_ids == 3  # junk dropped, distractor 0 kept
    assert len(dataset.trainval) == 9 and dataset.has_labels is False
    assert "(query and gallery labelled, from" in dataset.summary()


@pytest.mark.parametrize("make, message", [
    (lambda crops, tmp: (f"folder:{crops}", tmp / "nothing"),
     "expected a labelled test set in the Market-1501 layout, with bounding_box_test/ and query/"),
    (lambda crops, tmp: (f"folder:{crops}", crops), "the test set lies inside the target folder"),
    (lambda crops, tmp: ("synth_b", tmp), "only a folder: or list: target takes one; synth_b"),
])
def test_a_bad_test_folder_is_one_line(crops, tmp_path, make, message):
    write_market_style(str(crops), {k: v for k, v in MARKET_FILES.items() if k != "bounding_box_train"})
    spec, test_dir = make(crops, tmp_path)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(UserError, match=message) as error:
        datasets.create(spec, str(tmp_path), verbose=False, test_dir=str(test_dir))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("make, message", [
    (lambda tmp: f"folder:{tmp / 'missing'}", "no such folder$"),
    (lambda tmp: f"folder:{tmp / 'empty'}", "no .jpg/.jpeg/.png/.bmp file in this folder or below"),
    (lambda tmp: f"folder:{tmp / 'a.txt'}", r"no such folder \(a text file of paths is named list:"),
    (lambda tmp: f"list:{tmp / 'empty'}", r"no such file \(a folder is named folder:"),
    (lambda tmp: f"list:{tmp / 'a.txt'}", "2 of the 3 listed images do not exist, the first .*/gone 1.jpg$"),
    (lambda tmp: f"list:{tmp / 'twice.txt'}", "is listed twice"),
    (lambda tmp: f"list:{tmp / 'blank.txt'}", "the file lists none"),
    (lambda tmp: "folder:", "expected folder:PATH"),
])
def test_bad_specs_are_one_line(tmp_path, make, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no image here")
    save(tmp_path / "here.png", Image.new("RGB", (4, 8)))
    (tmp_path / "a.txt").write_text("gone 1.jpg\nhere.png\ngone 2.jpg\n")
    (tmp_path / "twice.txt").write_text(f"here.png\n{tmp_path / 'here.png'}\n")
    (tmp_path / "blank.txt").write_text("\n \n")
    spec = make(tmp_path)
    with pytest.raises(UserError, match=message) as error:
        datasets.create(spec, str(tmp_path), verbose=False)
    assert "\n" not in str(error.value) and str(error.value).startswith(spec)


def test_the_target_option_takes_names_and_specs_and_says_what_else_it_expects(crops, tmp_path, capsys):
    parser = ArgumentParser()
    parser.add_argument("--tgt-dataset", type=datasets.dataset_arg)

    assert parser.parse_args(["--tgt-dataset", "market1501"]).tgt_dataset == "market1501"
    assert parser.parse_args(["--tgt-dataset", f"folder:{crops}"]).tgt_dataset == f"folder:{crops}"
    for value, message in (("market", "'market': expected one of market1501, dukemtmc, msmt17, cuhk03, synth_a, "
                                      "synth_b, or folder:PATH (a folder of person crops) or list:FILE"),
                           (f"list:{crops}", "no such file (a folder is named folder:")):
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(["--tgt-dataset", value])
        lines = capsys.readouterr().err.splitlines()
        assert stop.value.code == 2 and len(lines) == 1 and message in lines[0]
    with pytest.raises(argparse.ArgumentTypeError):
        datasets.dataset_arg("folder:")


def test_synth_b_under_random_names_is_the_same_images(tiny_pair, tmp_path):
    """What the acceptance run adapts to: the training crops copied under random nested names, no id in any."""
    labelled = datasets.create("synth_b", str(tiny_pair / "synth_b"), verbose=False)
    rng = random.Random(0)
    copies = {}
    for index, (path, _, _) in enumerate(labelled.trainval):
        target = tmp_path / "crops" / f"{rng.randrange(3)}" / f"{rng.getrandbits(40):x} {index}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
        copies[str(target)] = path

    unlabelled = datasets.create(f"folder:{tmp_path / 'crops'}", "", verbose=False)

    assert sorted(copies[path] for path, _, _ in unlabelled.trainval) == sorted(p for p, _, _ in labelled.trainval)


def test_extract_lists_with_the_same_function(tmp_path):
    from reid import extract

    save(tmp_path / "b" / "1.PNG", Image.new("RGB", (4, 8)))
    assert extract.list_images is list_images
    assert list_images(str(tmp_path)) == [str(tmp_path / "b" / "1.PNG")]
