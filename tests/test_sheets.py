"""Contact sheets: the rows of a cluster sheet (sizes, members, intruders framed red, outliers) and the numbered
grid of SSG++'s images to label, checked pixel by pixel on solid-colour crops."""
import numpy as np
import pytest
from PIL import Image

from reid.utils.sheets import (
    HEADER,
    LABEL_WIDTH,
    NUMBER,
    draw_cluster_sheet,
    draw_numbered_sheet,
    sample_clusters,
    write_cluster_sheet,
)
from reid.utils.visualize import BACKGROUND, BORDER, FALSE_MATCH, GAP

SIZE = (24, 12)
COLOURS = {"A": (200, 40, 40), "B": (40, 160, 40), "C": (40, 40, 200), "D": (200, 200, 40), "E": (120, 0, 160)}


@pytest.fixture()
def crops(tmp_path):
    """Twelve solid crops in nested folders: person A x4, B x1, C x3, D x2, E x2; some greyscale or RGBA."""
    people = ["A", "A", "B", "A", "A", "C", "C", "C", "D", "D", "E", "E"]
    paths = []
    for index, person in enumerate(people):
        path = tmp_path / f"cam {index % 3}" / f"crop {index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.new("RGB", (10, 20), COLOURS[person])
        (image.convert("RGBA") if index % 4 == 1 else image).save(path)
        paths.append(str(path))
    return paths, np.array([ord(person) for person in people])


def tile_origin(row: int, column: int, size=SIZE) -> tuple[int, int]:
    """(left, top) of the framed tile in a cluster sheet's row and column."""
    height, width = size
    return GAP + LABEL_WIDTH + column * (width + 2 * BORDER + GAP), HEADER + row * (height + 2 * BORDER + GAP)


def pixel(picture: Image.Image, x: int, y: int) -> tuple:
    return picture.getpixel((x, y))


def test_a_cluster_sheet_shows_each_cluster_its_members_and_the_outliers(crops):
    paths, people = crops
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, -1, -1])  # cluster 0: four of A and B

    picture = draw_cluster_sheet(paths, labels, "iteration 3: global clusters", true_ids=people, size=SIZE)

    rows = [[0, 1, 2, 3, 4], [5, 6, 7], [8, 9], [10, 11]]  # by size, then the outliers
    height, width = SIZE
    for row, members in enumerate(rows):
        for column, index in enumerate(members):
            left, top = tile_origin(row, column)
            assert pixel(picture, left + BORDER + width // 2, top + BORDER + height // 2) == COLOURS[chr(people[index])]
            frame = pixel(picture, left, top)
            assert frame == (FALSE_MATCH if index == 2 else BACKGROUND), (row, column)  # B among A's images
        left, top = tile_origin(row, len(members))
        assert pixel(picture, left + BORDER + width // 2, top + BORDER + height // 2) == BACKGROUND  # nothing more
    assert picture.height == HEADER + 4 * (height + 2 * BORDER + GAP) + GAP
    dark = np.asarray(picture.convert("L"))[HEADER: HEADER + height, GAP: GAP + LABEL_WIDTH] < 100
    assert dark.any()  # the row's caption


def test_without_true_identities_nothing_is_framed_and_rows_are_capped(crops):
    paths, _ = crops
    labels = np.zeros(12, dtype=int)  # one cluster of all twelve

    picture = draw_cluster_sheet(paths, labels, "one cluster", max_members=5, size=SIZE)

    height, width = SIZE
    for column in range(5):
        left, top = tile_origin(0, column)
        assert pixel(picture, left, top) == BACKGROUND
        assert pixel(picture, left + BORDER + width // 2, top + BORDER + height // 2) != BACKGROUND
    left, top = tile_origin(1, 0)  # the outliers' row is empty
    assert pixel(picture, left + BORDER + width // 2, top + BORDER + height // 2) == BACKGROUND
    assert picture.width == max(GAP + LABEL_WIDTH + 5 * (width + 2 * BORDER + GAP), 480)


def test_sampled_clusters_keep_the_largest_and_follow_the_seed():
    labels = np.concatenate([np.repeat(np.arange(40), 5), np.full(30, 17), [-1] * 9])  # cluster 17 holds 35

    chosen = sample_clusters(labels, 12, seed=0)

    assert len(chosen) == 12 and chosen[0] == 17 and len(set(chosen)) == 12 and -1 not in chosen
    assert chosen == sample_clusters(labels, 12, seed=0) != sample_clusters(labels, 12, seed=1)
    assert sample_clusters(np.array([3, 3, -1, 1]), 12, seed=0) == [3, 1]
    assert sample_clusters(np.full(4, -1), 12, seed=0) == []


def test_the_sheet_is_written_atomically_into_a_new_folder_and_is_reproducible(crops, tmp_path):
    paths, people = crops
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, -1, -1])
    fpath = tmp_path / "logs" / "clusters" / "iteration_0.png"

    assert write_cluster_sheet(str(fpath), paths, labels, "iteration 0", true_ids=people, max_members=2) == str(fpath)
    first = fpath.read_bytes()
    write_cluster_sheet(str(fpath), paths, labels, "iteration 0", true_ids=people, max_members=2)

    assert fpath.read_bytes() == first
    assert [p.name for p in fpath.parent.iterdir()] == ["iteration_0.png"]  # no temporary file left
    with Image.open(fpath) as image:
        assert image.format == "PNG" and image.mode == "RGB"


def test_a_numbered_sheet_puts_each_crop_above_its_number(crops):
    paths, people = crops

    picture = draw_numbered_sheet(paths[:7], list(range(11, 18)), "images to label", columns=3, size=SIZE)

    height, width = SIZE
    cell_width, cell_height = width + 2 * BORDER, height + 2 * BORDER + NUMBER
    grey = np.asarray(picture.convert("L"))
    for position, index in enumerate(range(7)):
        left = GAP + (position % 3) * (cell_width + GAP)
        top = HEADER + (position // 3) * (cell_height + GAP)
        assert pixel(picture, left + BORDER + width // 2, top + BORDER + height // 2) == COLOURS[chr(people[index])]
        number_area = grey[top + height + 2 * BORDER: top + cell_height, left: left + cell_width]
        assert (number_area < 100).any()
    assert picture.height == HEADER + 3 * (cell_height + GAP)
    with pytest.raises(ValueError, match="7 images for 6 numbers"):
        draw_numbered_sheet(paths[:7], list(range(6)), "x")
