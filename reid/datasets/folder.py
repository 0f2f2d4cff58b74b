"""A target without labels: a folder of person crops, or a text file listing them, as one's own cameras give.

SSG needs no identity on the target (Fu et al., ICCV 2019): every crop is a training image, with the person id
and camera id unknown (:data:`UNKNOWN_PID`, :data:`UNKNOWN_CAMID`). There is no query/gallery split to evaluate
on unless a labelled test folder in the Market-1501 layout is named (``query/`` and ``bounding_box_test/``, file
names ``PPPP_cCsS_FFFFFF_NN.jpg``).

A target is named by a spec (:func:`parse_spec`):

- ``folder:PATH``: every .jpg, .jpeg, .png and .bmp file of the folder PATH and its sub-folders, any names,
  in sorted order (the same name in two sub-folders is two images: items hold full paths);
- ``list:FILE``: the images a text file names, one path per line (relative paths are taken from the file's
  folder).
"""

from __future__ import annotations

import os

from reid.datasets.base import MARKET_STYLE_FOLDERS, ReIDDataset, find_layout, layout_error, parse_image_folder
from reid.datasets.market1501 import Market1501
from reid.utils.data.preprocessor import IMAGE_EXTENSIONS, Item, is_image
from reid.utils.errors import UserError

FOLDER_PREFIX = "folder:"
LIST_PREFIX = "list:"
SPEC_PREFIXES = (FOLDER_PREFIX, LIST_PREFIX)
# An unlabelled crop's ids. Training reads pids only when no pseudo-labels are given, which an adaptation run
# always gives; evaluation runs only on a labelled test folder.
UNKNOWN_PID = -1
UNKNOWN_CAMID = -1
_TEST_FOLDERS = MARKET_STYLE_FOLDERS[1:]  # bounding_box_test/, query/


def list_images(source: str, what: str | None = None) -> list[str]:
    """The image paths of a folder (recursive, sorted) or of a text file listing one path per line.

    Parameters
    ----------
    source : str
        A folder, searched recursively for :data:`IMAGE_EXTENSIONS` (any case), or a text file of paths;
        relative paths in it are taken from its folder, blank lines skipped.
    what : str, optional
        How error messages name ``source`` (default ``--images SOURCE``, the option of ``reid.extract``).

    Returns
    -------
    list of str

    Raises
    ------
    UserError
        When ``source`` does not exist, holds no image, or its list cannot be read or names none.
    """
    what = what or f"--images {source}"
    if os.path.isdir(source):
        paths = sorted(os.path.join(folder, name) for folder, _, names in os.walk(source) for name in names
                       if is_image(name))
        if not paths:
            raise UserError(f"{what}: no {'/'.join(IMAGE_EXTENSIONS)} file in this folder or below")
        return paths
    if not os.path.isfile(source):
        raise UserError(f"{what}: no such folder or list file")
    try:
        with open(source, encoding="utf-8") as stream:
            lines = [line.strip() for line in stream]
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{what}: cannot read the list of image paths ({exc})") from exc
    folder = os.path.dirname(source)
    paths = [os.path.join(folder, line) for line in lines if line]
    if not paths:
        raise UserError(f"{what}: expected one image path per line, the file lists none")
    return paths


def is_spec(name: str) -> bool:
    """Whether ``name`` names an unlabelled target (``folder:PATH`` or ``list:FILE``) rather than a dataset."""
    return name.startswith(SPEC_PREFIXES)


def parse_spec(spec: str) -> tuple[str, str]:
    """``(kind, path)`` of a spec: ``("folder", PATH)`` or ``("list", FILE)``, the path made absolute.

    Raises
    ------
    UserError
        When the spec has no path, or the path is missing or of the other kind.
    """
    kind, _, path = spec.partition(":")
    if kind + ":" not in SPEC_PREFIXES or not path:
        raise UserError(f"{spec}: expected folder:PATH (a folder of person crops) or list:FILE (a text file of "
                        "image paths)")
    path = os.path.abspath(os.path.expanduser(path))
    if kind == "folder" and not os.path.isdir(path):
        hint = f" (a text file of paths is named list:{path})" if os.path.isfile(path) else ""
        raise UserError(f"{spec}: no such folder{hint}")
    if kind == "list" and not os.path.isfile(path):
        hint = f" (a folder is named folder:{path})" if os.path.isdir(path) else ""
        raise UserError(f"{spec}: no such file{hint}")
    return kind, path


class UnlabelledImages(ReIDDataset):
    """Person crops without identities or cameras: ``trainval`` holds every crop as
    ``(path, UNKNOWN_PID, UNKNOWN_CAMID)``; ``query`` and ``gallery`` are empty unless ``test_dir`` is given.

    Parameters
    ----------
    spec : str
        ``folder:PATH`` or ``list:FILE`` (:func:`parse_spec`). Images are decoded when training reads them
        (:func:`reid.utils.data.preprocessor.read_image`: greyscale and transparency converted to RGB).
    test_dir : str, optional
        A labelled test set in the Market-1501 layout (``query/`` and ``bounding_box_test/``, directly or inside
        ``Market-1501-v15.09.15/``): the query and gallery then come from it, labelled, and can be evaluated on.
        It must lie outside a ``folder:`` target, whose crops would otherwise include the test images.
    verbose : bool
        Print the subset table once loaded.

    Attributes
    ----------
    name : str
        The spec, as given.
    has_labels : bool
        False: the training images have no identity (the query and gallery of ``test_dir`` do).

    Raises
    ------
    UserError
        For a bad spec, an empty folder or list, a listed file that does not exist or is listed twice, or a
        ``test_dir`` without the layout.
    """

    has_labels = False

    def __init__(self, spec: str, *, test_dir: str | None = None, verbose: bool = True) -> None:
        kind, path = parse_spec(spec)
        paths = [os.path.abspath(p) for p in list_images(path, spec)]
        if kind == "list":
            _check_listed(spec, paths)
        trainval: list[Item] = [(p, UNKNOWN_PID, UNKNOWN_CAMID) for p in paths]
        query: list[Item] = []
        gallery: list[Item] = []
        self.test_dir = None
        if test_dir is not None:
            self.test_dir = _find_test_layout(test_dir, path if kind == "folder" else None)
            query, gallery = (parse_image_folder(os.path.join(self.test_dir, folder), Market1501.name_pattern,
                                                 Market1501.name_format) for folder in ("query", "bounding_box_test"))
        self.name = spec
        images_dir = path if kind == "folder" else os.path.dirname(path)
        super().__init__(images_dir, images_dir, trainval, query, gallery, verbose=verbose)

    def summary(self) -> str:
        """The number of crops (identities unknown) and the labelled test set, if any."""
        lines = [f"{self.name} ({self.images_dir})",
                 "  subset   |  # ids | # images",
                 "  ---------+--------+---------",
                 f"  {'trainval':<8} | {'?':>6} | {len(self.trainval):>8}"]
        if self.test_dir is None:
            lines.append("  no query/gallery: nothing labelled to evaluate on")
        else:
            lines += [f"  {subset:<8} | {ids:>6} | {len(items):>8}" for subset, ids, items in (
                ("query", self.num_query_ids, self.query), ("gallery", self.num_gallery_ids, self.gallery))]
            lines.append(f"  (query and gallery labelled, from {self.test_dir})")
        return "\n".join(lines)


def _check_listed(spec: str, paths: list[str]) -> None:
    """A list naming a missing file, or one file twice, stops before any work: one line naming the first."""
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise UserError(f"{spec}: {len(missing)} of the {len(paths)} listed images do not exist, "
                        f"the first {missing[0]}")
    seen: set[str] = set()
    for path in paths:
        if path in seen:
            raise UserError(f"{spec}: {path} is listed twice; list each image once")
        seen.add(path)


def _find_test_layout(test_dir: str, crops_folder: str | None) -> str:
    """The folder holding ``query/`` and ``bounding_box_test/``; refused inside the folder of training crops."""
    nestings = ("", Market1501.archive_folder)
    found = find_layout(test_dir, nestings, _TEST_FOLDERS)
    if found is None:
        raise layout_error(test_dir, "a labelled test set in the Market-1501 layout, with bounding_box_test/ and "
                           "query/", nestings)
    found = os.path.abspath(found)
    if crops_folder is not None and os.path.commonpath([found, crops_folder]) == crops_folder:
        raise UserError(f"{test_dir}: the test set lies inside the target folder {crops_folder}, whose crops would "
                        "include its query and gallery images; move it out")
    return found
