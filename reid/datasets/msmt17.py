"""MSMT17 (Wei et al., "Person Transfer GAN to Bridge Domain Gap for Person Re-Identification", CVPR 2018)."""

from __future__ import annotations

import os
import re

from reid.datasets.base import (
    ReIDDataset,
    find_layout,
    layout_error,
    relabel,
    require_images,
)
from reid.utils.data.preprocessor import Item, is_image
from reid.utils.errors import UserError


class MSMT17(ReIDDataset):
    """MSMT17: 4,101 identities, 126,441 images from 15 cameras (12 outdoor, 3 indoor) over four days.

    Statistics:

    ======================  =====  ========
    subset                  # ids  # images
    ======================  =====  ========
    train (list_train)      1,041    30,248
    train + val             1,041    32,621
    query                   3,060    11,659
    gallery                 3,060    82,161
    ======================  =====  ========

    The subsets are given by list files whose lines read ``relative/path pid``, paths relative to the
    training folder (``list_train.txt``, ``list_val.txt``) or the test folder (``list_query.txt``,
    ``list_gallery.txt``). The camera is the third ``_`` field of the file name, 1-based:
    ``0000_000_01_0303morning_0015_0.jpg`` is camera 1. Test pids restart at 0 and pid 0 is a real person.

    Parameters
    ----------
    root : str
        ``<data_dir>/msmt17``, holding the list files and ``train/``, ``test/`` (V1) or
        ``mask_train_v2/``, ``mask_test_v2/`` (V2), either directly or inside ``MSMT17_V1/`` or
        ``MSMT17_V2/`` (the folders the official archives extract to).
    combine_val : bool
        Train on ``list_train.txt`` plus ``list_val.txt`` (32,621 images) rather than ``list_train.txt``
        alone (30,248 images), which is what the authors' released code trained on, validating on
        ``list_val.txt`` (the dataset's ``val``; None when combined).
    verbose : bool
        Print the subset table once loaded.
    """

    name = "msmt17"
    archive_folders = ("MSMT17_V1", "MSMT17_V2")
    image_folders = (("train", "test"), ("mask_train_v2", "mask_test_v2"))
    list_files = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
    list_line_pattern = re.compile(r"(?P<path>\S+)\s+(?P<pid>\d+)")
    name_pattern = re.compile(r"\d+_\d+_(?P<cam>0*[1-9]\d*)_.*")
    name_format = "PPPP_III_CC_... (0000_000_01_0303morning_0015_0.jpg)"

    def __init__(self, root: str, *, combine_val: bool = False, verbose: bool = True) -> None:
        images_dir, train_dir, test_dir = self._find_folders(root)
        trainval = self._read_list(os.path.join(images_dir, "list_train.txt"), train_dir)
        val = self._read_list(os.path.join(images_dir, "list_val.txt"), train_dir)
        if combine_val:
            trainval, val = trainval + val, None
        query = self._read_list(os.path.join(images_dir, "list_query.txt"), test_dir)
        gallery = self._read_list(os.path.join(images_dir, "list_gallery.txt"), test_dir)
        self.combine_val = combine_val
        super().__init__(root, images_dir, relabel(trainval), query, gallery, val=val, verbose=verbose)

    def _find_folders(self, root: str) -> tuple[str, str, str]:
        """The dataset folder and its training and test image folders, V1 or V2 names."""
        nestings = ("", *self.archive_folders)
        for train, test in self.image_folders:
            images_dir = find_layout(root, nestings, (train, test, *self.list_files))
            if images_dir is not None:
                return images_dir, os.path.join(images_dir, train), os.path.join(images_dir, test)
        folders = "train/ and test/ (V2: mask_train_v2/ and mask_test_v2/)"
        expected = f"an MSMT17 folder with {folders} and {', '.join(self.list_files)}"
        raise layout_error(root, expected, nestings)

    def _read_list(self, list_path: str, folder: str) -> list[Item]:
        """The samples listed in ``list_path``, paths resolved against ``folder``."""
        with open(list_path) as lines:
            samples = [
                self._parse_line(line, f"{list_path}:{number}", folder)
                for number, line in enumerate(lines, 1)
                if line.strip()
            ]
        return require_images(samples, list_path)

    def _parse_line(self, line: str, where: str, folder: str) -> Item:
        entry = self.list_line_pattern.fullmatch(line.strip())
        if entry is None:
            raise UserError(f"{where}: expected 'relative/path pid', got {line.strip()!r}")
        relative_path = entry["path"]
        stem = os.path.splitext(os.path.basename(relative_path))[0]
        name = self.name_pattern.fullmatch(stem)
        if name is None or not is_image(relative_path):
            raise UserError(f"{where}: expected an image name like {self.name_format}, got {relative_path}")
        path = os.path.join(folder, relative_path)
        if not os.path.isfile(path):
            raise UserError(f"{where}: {path} does not exist")
        return os.path.abspath(path), int(entry["pid"]), int(name["cam"]) - 1
