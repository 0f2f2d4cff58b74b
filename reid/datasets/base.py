"""What every re-ID dataset shares: the ``(fname, pid, camid)`` subsets, the layout check and the parsing of
the Market-1501 style folders (``bounding_box_train/``, ``bounding_box_test/``, ``query/``) that
Market-1501, DukeMTMC-reID, CUHK03-NP and the synthetic domains all use.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

from reid.utils.data.preprocessor import Item, is_image
from reid.utils.errors import UserError

JUNK_PID = -1
MARKET_STYLE_FOLDERS = ("bounding_box_train", "bounding_box_test", "query")


class ReIDDataset:
    """A re-ID benchmark split into a training set and a query/gallery test set.

    Parameters
    ----------
    root : str
        The dataset folder given by the user (``<data_dir>/<name>``).
    images_dir : str
        The folder inside ``root`` where the layout was found.
    trainval, query, gallery : list of (fname, pid, camid)
        ``fname`` is an absolute path. Training pids must already be relabelled to ``0..K-1``; query and
        gallery keep the original pids (0 marks a distractor); camera ids are 0-based.
    val : list of (fname, pid, camid), optional
        An official validation split of training images that selects the source model (MSMT17's
        ``list_val``); None when the model is selected on held-out training identities
        (:func:`split_validation`).
    verbose : bool
        Print :meth:`summary` once built.

    Attributes
    ----------
    name : str
        The name :func:`reid.datasets.create` knows the dataset by.
    num_trainval_ids, num_query_ids, num_gallery_ids : int
        Distinct pids per subset (the distractor pid 0 counts as one).
    has_labels : bool
        Whether the training images carry their true identities (every named dataset; not a folder of crops,
        :class:`reid.datasets.folder.UnlabelledImages`). Diagnostics measured against them, and SSG++'s
        labels drawn from them, need it.
    """

    name = ""
    has_labels = True

    def __init__(
        self,
        root: str,
        images_dir: str,
        trainval: list[Item],
        query: list[Item],
        gallery: list[Item],
        *,
        val: list[Item] | None = None,
        verbose: bool = True,
    ) -> None:
        self.root = os.path.abspath(root)
        self.images_dir = os.path.abspath(images_dir)
        self.trainval = trainval
        self.query = query
        self.gallery = gallery
        self.val = val
        self.num_trainval_ids = count_ids(trainval)
        self.num_query_ids = count_ids(query)
        self.num_gallery_ids = count_ids(gallery)
        if verbose:
            print(self.summary())

    def summary(self) -> str:
        """A small table of identities and images per subset, headed by the name and folder."""
        rows = [
            ("trainval", self.num_trainval_ids, len(self.trainval)),
            ("query", self.num_query_ids, len(self.query)),
            ("gallery", self.num_gallery_ids, len(self.gallery)),
        ]
        lines = [
            f"{self.name} ({self.images_dir})",
            "  subset   |  # ids | # images",
            "  ---------+--------+---------",
        ]
        lines += [f"  {subset:<8} | {ids:>6} | {images:>8}" for subset, ids, images in rows]
        return "\n".join(lines)


def count_ids(samples: Sequence[Item]) -> int:
    """Number of distinct pids in ``samples``."""
    return len({pid for _, pid, _ in samples})


def relabel(samples: Sequence[Item]) -> list[Item]:
    """Map the pids of ``samples`` to ``0..K-1`` in the order of the original pids."""
    new_pid = {pid: label for label, pid in enumerate(sorted({pid for _, pid, _ in samples}))}
    return [(fname, new_pid[pid], camid) for fname, pid, camid in samples]


def validation_count(num_val: float, num_ids: int) -> int:
    """How many of ``num_ids`` training identities ``--num-val`` holds out: a fraction below 1
    (``int(round(num_val * num_ids))``, the release's ``num_val=0.1``: Market 75 of 751, Duke 70 of 702) or a
    count of 1 or more.

    Raises
    ------
    UserError
        When the count is not between 1 and ``num_ids - 1`` or a value of 1 or more is not a whole number.
    """
    if num_val >= 1 and num_val != int(num_val):
        raise UserError(f"--num-val {num_val:g}: expected a fraction below 1 or a whole number of identities")
    count = int(round(num_val * num_ids)) if num_val < 1 else int(num_val)
    if not 0 < count < num_ids:
        raise UserError(f"--num-val {num_val:g}: expected between 1 and {num_ids - 1} of the {num_ids} training "
                        "identities (or --combine-trainval to train on all of them)")
    return count


def split_validation(trainval: Sequence[Item], num_val: float, seed: int) -> tuple[list[Item], list[Item]]:
    """Hold out training identities for model selection (the release's split, ``num_val=0.1``).

    ``num_val`` is a fraction of the identities or a count (:func:`validation_count`). The ascending training
    pids are shuffled with ``numpy.random.RandomState(seed)`` (what ``np.random.seed(seed)`` then
    ``np.random.shuffle`` give); the last ones form the validation set (used as query and gallery at once),
    the others the training set. Both are relabelled to ``0..K-1`` and never share an identity.
    """
    ids = sorted({pid for _, pid, _ in trainval})
    count = validation_count(num_val, len(ids))
    shuffled = np.random.RandomState(seed).permutation(ids)
    held_out = set(shuffled[-count:].tolist())
    train = relabel([sample for sample in trainval if sample[1] not in held_out])
    val = relabel([sample for sample in trainval if sample[1] in held_out])
    return train, val


def find_layout(root: str, nestings: Sequence[str], required: Sequence[str]) -> str | None:
    """The first ``root/<nesting>`` (``""`` = root itself) holding every entry of ``required``, else None."""
    for nesting in nestings:
        candidate = os.path.join(root, nesting)
        if all(os.path.exists(os.path.join(candidate, entry)) for entry in required):
            return candidate
    return None


def layout_error(root: str, expected: str, nestings: Sequence[str]) -> UserError:
    """The one-line error for a dataset folder that holds none of the accepted layouts.

    ``expected`` reads like "a Market-1501 folder with bounding_box_train/ and query/"; the accepted
    nestings are appended, e.g. "(directly or inside Market-1501-v15.09.15/)".
    """
    places = ["directly"] if "" in nestings else []
    inside = [f"{nesting}/" for nesting in nestings if nesting]
    if inside:
        places.append("inside " + " or ".join(inside))
    return UserError(f"{root}: expected {expected} ({' or '.join(places)})")


def find_market_style_layout(root: str, title: str, nestings: Sequence[str]) -> str:
    """The folder holding ``bounding_box_train/``, ``bounding_box_test/`` and ``query/``.

    Raises
    ------
    UserError
        When no accepted nesting of ``root`` holds the three folders.
    """
    images_dir = find_layout(root, nestings, MARKET_STYLE_FOLDERS)
    if images_dir is None:
        train, test, query = (f"{folder}/" for folder in MARKET_STYLE_FOLDERS)
        raise layout_error(root, f"a {title} folder with {train}, {test} and {query}", nestings)
    return images_dir


def parse_image_folder(folder: str, name_pattern: re.Pattern[str], name_format: str) -> list[Item]:
    """Read every image of ``folder`` whose name (without extension) matches ``name_pattern``.

    The pattern must name the groups ``pid`` and ``cam`` (1-based). Junk images (pid -1) are dropped,
    distractors (pid 0) kept; files that are not images (``Thumbs.db``) are ignored.

    Raises
    ------
    UserError
        When an image's name does not match ``name_pattern`` or no image remains.
    """
    samples = []
    for fname in sorted(os.listdir(folder)):
        path = os.path.join(folder, fname)
        if not is_image(fname) or not os.path.isfile(path):
            continue
        match = name_pattern.fullmatch(os.path.splitext(fname)[0])
        if match is None:
            raise UserError(f"{path}: expected an image name like {name_format}")
        pid = int(match["pid"])
        if pid != JUNK_PID:
            samples.append((os.path.abspath(path), pid, int(match["cam"]) - 1))
    return require_images(samples, folder)


def require_images(samples: list[Item], source: str) -> list[Item]:
    """Return ``samples`` unchanged; raise a UserError naming ``source`` when it is empty."""
    if not samples:
        raise UserError(f"{source}: no usable image (junk images, pid -1, are not counted)")
    return samples


def load_market_style(
    images_dir: str, name_pattern: re.Pattern[str], name_format: str
) -> tuple[list[Item], list[Item], list[Item]]:
    """Trainval (relabelled), query and gallery read from the three Market-1501 style folders."""
    train, test, query = (os.path.join(images_dir, folder) for folder in MARKET_STYLE_FOLDERS)
    trainval = relabel(parse_image_folder(train, name_pattern, name_format))
    return (
        trainval,
        parse_image_folder(query, name_pattern, name_format),
        parse_image_folder(test, name_pattern, name_format),
    )
