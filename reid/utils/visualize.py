"""Ranked-list pictures for person re-identification (Market-1501 evaluation protocol), drawn with PIL.

One PNG per query: the query image at the left, then its top-k gallery images by distance, each framed green
when it shows the query's identity and red otherwise, with its rank and distance written below. Gallery
images with the query's identity *and* camera are left out first, as the evaluation does.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from reid.utils.data.preprocessor import Item, read_image
from reid.utils.osutils import write_atomically

TRUE_MATCH = (0, 170, 0)
FALSE_MATCH = (220, 0, 0)
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
BORDER = 4  # frame width around every gallery image
GAP = 8  # between cells and around the picture
QUERY_GAP = 24  # wider, to set the query apart from its ranked list
CAPTION = 30  # two text lines below each image


def visualize_ranked_results(distmat: np.ndarray, query: Sequence[Item], gallery: Sequence[Item], out_dir: str,
                             num_queries: int, topk: int = 10, size: tuple[int, int] = (128, 64)) -> list[str]:
    """Draw the top-``topk`` gallery images of ``num_queries`` queries, one PNG each.

    Parameters
    ----------
    distmat : numpy.ndarray
        Query-gallery distances, shape (Q, G); smaller is closer.
    query, gallery : sequence of (fname, pid, camid)
        The items the rows and columns of ``distmat`` belong to.
    out_dir : str
        Folder for the PNGs, created when missing.
    num_queries : int
        How many queries to draw, evenly spaced over the query list (which is sorted by identity in the
        public datasets, so the first queries would all show a handful of people); all when >= Q.
    topk : int
        Gallery images per query.
    size : (height, width)
        Size every image is resized to.

    Returns
    -------
    list of str
        The written files, ``<query index>_<query file stem>.png``, in query order.

    Raises
    ------
    UserError
        When a query or gallery image cannot be read.
    """
    distmat = np.asarray(distmat)
    if distmat.shape != (len(query), len(gallery)):
        raise ValueError(f"distmat has shape {distmat.shape}, expected ({len(query)}, {len(gallery)})")
    os.makedirs(out_dir, exist_ok=True)
    gallery_pids = np.array([pid for _, pid, _ in gallery])
    gallery_cams = np.array([cam for _, _, cam in gallery])
    paths = []
    for index in spaced_indices(len(query), num_queries):
        fname, pid, cam = query[index]
        ranked = ranked_gallery(distmat[index], pid, cam, gallery_pids, gallery_cams, topk)
        cells = [(read_image(gallery[g][0]), gallery_pids[g] == pid, f"#{rank}\n{distmat[index, g]:.3f}")
                 for rank, g in enumerate(ranked, start=1)]
        picture = draw_ranked_list(read_image(fname), pid, cells, size)
        path = os.path.join(out_dir, f"{index}_{os.path.splitext(os.path.basename(fname))[0]}.png")
        write_atomically(path, functools.partial(picture.save, format="PNG"))
        paths.append(path)
    return paths


def spaced_indices(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)``, the first and last included."""
    if count >= total:
        return list(range(total))
    if count <= 0:
        return []
    return sorted(set(np.linspace(0, total - 1, count).round().astype(int).tolist()))


def ranked_gallery(distances: np.ndarray, pid: int, cam: int, gallery_pids: np.ndarray,
                   gallery_cams: np.ndarray, topk: int) -> np.ndarray:
    """Gallery indices closest first, without the images of the query's identity seen by its camera."""
    order = np.argsort(distances, kind="stable")
    same_view = (gallery_pids[order] == pid) & (gallery_cams[order] == cam)
    return order[~same_view][:topk]


def cell_box(column: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Outer box (left, top, right, bottom; inclusive) of the framed image in ``column`` (0 = the query)."""
    height, width = size
    cell_width = width + 2 * BORDER
    left = GAP + column * (cell_width + GAP) + (QUERY_GAP - GAP if column > 0 else 0)
    return left, GAP, left + cell_width - 1, GAP + height + 2 * BORDER - 1


def draw_ranked_list(query_image: Image.Image, pid: int, cells: list[tuple[Image.Image, bool, str]],
                     size: tuple[int, int]) -> Image.Image:
    """Compose the picture: the query, then ``cells`` of (gallery image, is true match, caption)."""
    height, width = size
    right = cell_box(len(cells), size)[2]
    bottom = cell_box(0, size)[3]
    canvas = Image.new("RGB", (right + GAP + 1, bottom + CAPTION + GAP), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    columns = [(query_image, None, f"query\nid {pid}")] + cells
    for column, (image, is_match, caption) in enumerate(columns):
        left, top, box_right, box_bottom = cell_box(column, size)
        if is_match is not None:
            draw.rectangle((left, top, box_right, box_bottom), fill=TRUE_MATCH if is_match else FALSE_MATCH)
        canvas.paste(image.resize((width, height)), (left + BORDER, top + BORDER))
        draw.multiline_text(((left + box_right) / 2, box_bottom + 4), caption, fill=TEXT,
                            font=font, anchor="ma", align="center")
    return canvas
