"""Miniature copies of the public re-ID dataset layouts (real file names, tiny real images) for the tests."""

from __future__ import annotations

import os
from collections.abc import Iterable

from PIL import Image

MARKET_FILES = {
    "bounding_box_train": [
        "0002_c1s1_000451_03.jpg",
        "0002_c2s1_000301_01.jpg",
        "0007_c1s2_000100_01.jpg",
        "0007_c6s3_000200_02.jpg",
        "0015_c3s1_000500_01.jpg",
        "Thumbs.db",
    ],
    "bounding_box_test": [
        "-1_c1s1_000401_03.jpg",
        "-1_c5s1_000402_01.jpg",
        "0000_c1s1_000151_01.jpg",
        "0000_c4s2_000160_02.jpg",
        "0003_c2s1_000600_01.jpg",
        "0003_c4s1_000601_01.jpg",
        "0011_c5s2_000700_01.jpg",
        "Thumbs.db",
    ],
    "query": ["0003_c1s1_000610_00.jpg", "0011_c6s1_000720_00.jpg", "Thumbs.db"],
}

DUKE_FILES = {
    "bounding_box_train": ["0001_c2_f0046182.jpg", "0001_c6_f0100001.jpg", "0005_c8_f0002000.jpg"],
    "bounding_box_test": ["0002_c1_f0000001.jpg", "0002_c7_f0000002.jpg", "0100_c3_f0000003.jpg"],
    "query": ["0002_c5_f0000010.jpg"],
}

CUHK03_FILES = {
    "detected": {
        "bounding_box_train": ["0001_c1_1.png", "0001_c2_2.png", "0004_c1_1.png"],
        "bounding_box_test": ["0002_c1_1.png", "0002_c2_3.png", "0003_c2_4.png"],
        "query": ["0002_c2_1.png", "0003_c1_1.png"],
    },
    "labeled": {
        "bounding_box_train": ["0001_c1_1.png", "0001_c2_2.png", "0004_c1_1.png", "0004_c2_5.png"],
        "bounding_box_test": ["0002_c1_1.png", "0002_c2_3.png"],
        "query": ["0002_c2_1.png"],
    },
}

MSMT_TRAIN = {
    "list_train.txt": [
        ("0000/0000_000_01_0303morning_0015_0.jpg", 0),
        ("0003/0003_000_15_0304noon_0100_0.jpg", 3),
    ],
    "list_val.txt": [
        ("0000/0000_001_05_0303noon_0020_1.jpg", 0),
        ("0001/0001_000_02_0303morning_0030_0.jpg", 1),
    ],
}
MSMT_TEST = {
    "list_query.txt": [("0000/0000_000_04_0303morning_0001_0.jpg", 0)],
    "list_gallery.txt": [
        ("0000/0000_003_07_0303noon_0002_0.jpg", 0),
        ("0002/0002_000_12_0303noon_0003_0.jpg", 2),
    ],
}


def write_image(path: str) -> None:
    """A tiny real image, JPEG or PNG after the extension."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (4, 8), (120, 60, 30)).save(path)


def write_files(folder: str, names: Iterable[str]) -> None:
    """Images for image names, a few junk bytes for anything else (Thumbs.db)."""
    for name in names:
        path = os.path.join(folder, name)
        if name.endswith((".jpg", ".png")):
            write_image(path)
        else:
            os.makedirs(folder, exist_ok=True)
            with open(path, "wb") as stray:
                stray.write(b"\x00not an image")


def write_market_style(images_dir: str, files: dict[str, list[str]]) -> None:
    """bounding_box_train/, bounding_box_test/ and query/ with the given file names."""
    for folder, names in files.items():
        write_files(os.path.join(images_dir, folder), names)


def write_msmt(images_dir: str, train_folder: str = "train", test_folder: str = "test") -> None:
    """An MSMT17 folder: the four list files and the images they name."""
    for lists, folder in ((MSMT_TRAIN, train_folder), (MSMT_TEST, test_folder)):
        for list_name, entries in lists.items():
            for relative_path, _ in entries:
                write_image(os.path.join(images_dir, folder, relative_path))
            with open(os.path.join(images_dir, list_name), "w") as listing:
                listing.writelines(f"{path} {pid}\n" for path, pid in entries)
