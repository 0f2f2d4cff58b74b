"""Contact sheets of person crops, drawn with PIL: the clusters of an SSG grouping, to judge it by eye, and the
numbered images a person labels for SSG++.

A cluster sheet shows sampled clusters, one row each: its size at the left, then member crops; a last row shows
outliers. Where the images' true identities are known, a member not of its cluster's most frequent identity is
framed red. A numbered sheet lays images out in a grid with a number under each, the number a person writes
the image's identity against.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from reid.utils.data.preprocessor import read_image
from reid.utils.osutils import write_atomically
from reid.utils.visualize import BACKGROUND, BORDER, FALSE_MATCH, GAP, TEXT

TILE = (96, 48)  # (height, width) each crop is fitted into, its aspect ratio kept
LABEL_WIDTH = 110  # the caption column at the left of a cluster row
HEADER = 36  # the title lines above the rows
NUMBER = 16  # the number line under a tile of a numbered sheet
MAX_CLUSTERS = 12
MAX_MEMBERS = 10
COLUMNS = 10
PER_PAGE = 100


@functools.cache
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size)


def fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` scaled to fit ``size`` (height, width), aspect ratio kept, centred on the background."""
    height, width = size
    scaled = ImageOps.contain(image, (width, height))
    tile = Image.new("RGB", (width, height), BACKGROUND)
    tile.paste(scaled, ((width - scaled.width) // 2, (height - scaled.height) // 2))
    return tile


def _paste_tile(canvas: Image.Image, fname: str, left: int, top: int, size: tuple[int, int],
                frame: tuple[int, int, int] | None) -> None:
    """The crop ``fname`` fitted in ``size`` at (left, top) inside a frame of :data:`BORDER` pixels, drawn only
    when ``frame`` is a colour."""
    height, width = size
    if frame is not None:
        ImageDraw.Draw(canvas).rectangle((left, top, left + width + 2 * BORDER - 1, top + height + 2 * BORDER - 1),
                                         fill=frame)
    canvas.paste(fit(read_image(fname), size), (left + BORDER, top + BORDER))


def sample_clusters(labels: np.ndarray, max_clusters: int, seed: int) -> list[int]:
    """Up to ``max_clusters`` cluster ids, largest first: the largest always (where merged people show), the
    others drawn with ``seed``."""
    ids, sizes = np.unique(labels[labels != -1], return_counts=True)
    if ids.size == 0 or max_clusters < 1:
        return []
    largest = int(ids[np.argmax(sizes)])
    others = ids[ids != largest]
    drawn = np.random.RandomState(seed).choice(others, size=min(max_clusters - 1, others.size), replace=False)
    chosen = [largest, *(int(c) for c in drawn)]
    size_of = dict(zip(ids.tolist(), sizes.tolist()))
    return sorted(chosen, key=lambda c: (-size_of[c], c))


def _sample_members(members: np.ndarray, count: int, rng: np.random.RandomState) -> np.ndarray:
    return np.sort(rng.choice(members, size=min(count, members.size), replace=False))


def draw_cluster_sheet(fnames: Sequence[str], labels: np.ndarray, title: str, *,
                       true_ids: np.ndarray | None = None, max_clusters: int = MAX_CLUSTERS,
                       max_members: int = MAX_MEMBERS, seed: int = 0, size: tuple[int, int] = TILE) -> Image.Image:
    """Compose a cluster sheet (see the module).

    Parameters
    ----------
    fnames : sequence of str
        The images, one per label.
    labels : ndarray of shape (N,)
        Their clusters (e.g. the global type's DBSCAN labels); -1 marks an outlier.
    title : str
        The line above the rows; a second one says how many clusters are shown.
    true_ids : ndarray of shape (N,), optional
        The images' identities, where known: members not of their cluster's most frequent identity are framed
        red, and each caption says how many members show that identity.
    max_clusters, max_members : int
        Rows of clusters (:func:`sample_clusters`) and crops per row.
    seed : int
        The draw of clusters and members: the same grouping gives the same sheet.
    size : (height, width)
        The box each crop is fitted into.

    Returns
    -------
    PIL.Image.Image
    """
    labels = np.asarray(labels)
    if len(fnames) != labels.size:
        raise ValueError(f"draw_cluster_sheet: {len(fnames)} images for {labels.size} labels")
    rng = np.random.RandomState(seed)
    clusters = sample_clusters(labels, max_clusters, seed)
    rows = []  # (caption, member indices, framed indices)
    for cluster in clusters:
        members = np.flatnonzero(labels == cluster)
        shown = _sample_members(members, max_members, rng)
        caption = f"cluster {cluster}\n{members.size} images"
        framed: set[int] = set()
        if true_ids is not None:
            identities, counts = np.unique(true_ids[members], return_counts=True)
            majority = identities[np.argmax(counts)]
            caption += f"\n{counts.max()} of one person"
            framed = {int(i) for i in shown if true_ids[i] != majority}
        rows.append((caption, shown, framed))
    outliers = np.flatnonzero(labels == -1)
    rows.append((f"outliers\n{outliers.size} images", _sample_members(outliers, max_members, rng), set()))

    height, width = size
    cell_width, cell_height = width + 2 * BORDER, height + 2 * BORDER
    picture_width = GAP + LABEL_WIDTH + max_members * (cell_width + GAP)
    canvas = Image.new("RGB", (max(picture_width, 480), HEADER + len(rows) * (cell_height + GAP) + GAP),
                       BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    num_clusters = int(np.unique(labels[labels != -1]).size)
    draw.multiline_text((GAP, GAP // 2), f"{title}\n{len(clusters)} of {num_clusters} clusters shown (the largest, "
                        f"then drawn at random), up to {max_members} crops each"
                        + ("; red: not the cluster's most frequent person" if true_ids is not None else ""),
                        fill=TEXT, font=_font(11))
    for row, (caption, shown, framed) in enumerate(rows):
        top = HEADER + row * (cell_height + GAP)
        draw.multiline_text((GAP, top + 4), caption, fill=TEXT, font=_font(12))
        for column, index in enumerate(shown):
            left = GAP + LABEL_WIDTH + column * (cell_width + GAP)
            _paste_tile(canvas, fnames[index], left, top, size, FALSE_MATCH if index in framed else None)
    return canvas


def write_cluster_sheet(fpath: str, fnames: Sequence[str], labels: np.ndarray, title: str, **options) -> str:
    """:func:`draw_cluster_sheet` written atomically to ``fpath`` (PNG; its folder created); returns ``fpath``.
    The adaptation run's is ``<logs dir>/clusters/iteration_<k>.png``."""
    picture = draw_cluster_sheet(fnames, labels, title, **options)
    os.makedirs(os.path.dirname(os.path.abspath(fpath)), exist_ok=True)
    write_atomically(fpath, functools.partial(picture.save, format="PNG"))
    return fpath


def draw_numbered_sheet(fnames: Sequence[str], numbers: Sequence[int], title: str, *, columns: int = COLUMNS,
                        size: tuple[int, int] = TILE) -> Image.Image:
    """A grid of the crops ``fnames``, ``columns`` per row, each with its number below, under ``title``."""
    if len(fnames) != len(numbers):
        raise ValueError(f"draw_numbered_sheet: {len(fnames)} images for {len(numbers)} numbers")
    height, width = size
    cell_width, cell_height = width + 2 * BORDER, height + 2 * BORDER + NUMBER
    rows = max(1, -(-len(fnames) // columns))
    canvas = Image.new("RGB", (max(GAP + columns * (cell_width + GAP), 480), HEADER + rows * (cell_height + GAP)),
                       BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.multiline_text((GAP, GAP // 2), title, fill=TEXT, font=_font(11))
    for position, (fname, number) in enumerate(zip(fnames, numbers)):
        left = GAP + (position % columns) * (cell_width + GAP)
        top = HEADER + (position // columns) * (cell_height + GAP)
        _paste_tile(canvas, fname, left, top, size, None)
        draw.text((left + cell_width / 2, top + height + 2 * BORDER + 1), str(number), fill=TEXT, font=_font(13),
                  anchor="ma")
    return canvas
