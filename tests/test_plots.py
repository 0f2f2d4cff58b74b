"""Run curves from metrics.json (reid.utils.plots) and ranked-list pictures (reid.utils.visualize)."""
import sys

import numpy as np
import pytest
from PIL import Image

from reid.utils import osutils, plots, visualize
from reid.utils.errors import UserError
from reid.utils.plots import feature_types, iteration_entries, plot_metrics
from reid.utils.visualize import cell_box, spaced_indices, visualize_ranked_results

SIZE = (32, 16)  # (height, width) of every drawn image, small to keep the test fast
GREEN, RED = (0, 170, 0), (220, 0, 0)  # the frame colours of a true and a false match


def ssgpp_metrics(num_iterations: int) -> dict:
    """A run whose SSG++ entries start at iteration 5, written last iteration first."""
    metrics = {"before": {"mAP": 19.1, "top1": 46.8}}
    for k in reversed(range(num_iterations)):
        entry = {"mAP": 30.0 + k, "top1": 60.0 + k, "clusters_global": 700 - k, "clusters_upper": 650 - k,
                 "clusters_lower": 600 - k, "images_kept": 9000 + 10 * k}
        if k >= 5:
            entry.update(labelled=700, propagated=300 * (k + 1), propagated_accuracy=None if k == 5 else 80.0)
        metrics[f"iteration_{k}"] = entry
    return metrics


def test_iteration_entries_sort_numerically():
    metrics = ssgpp_metrics(12)
    metrics["iteration_notes"] = {"mAP": 0.0}

    entries = iteration_entries(metrics)

    assert [k for k, _ in entries] == list(range(12))
    assert entries[10][1]["mAP"] == 40.0
    assert feature_types(entries) == ["global", "upper", "lower"]


def test_plot_metrics_writes_three_pngs(tmp_path):
    out_dir = tmp_path / "plots" / "run"

    paths = plot_metrics(ssgpp_metrics(12), str(out_dir))

    assert [p.rsplit("/", 1)[1] for p in paths] == ["accuracy.png", "clusters.png", "images_kept.png"]
    sizes = {}
    for path in paths:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG"
            sizes[path.rsplit("/", 1)[1]] = image.size
            assert image.convert("L").getextrema()[0] < 100  # something dark was drawn on the white page
    assert sizes["accuracy.png"][0] >= 500 and sizes["accuracy.png"][1] >= 300
    # the propagated-label accuracy adds a second panel below
    assert sizes["images_kept.png"][1] > sizes["clusters.png"][1]
    assert sorted(p.name for p in out_dir.iterdir()) == ["accuracy.png", "clusters.png", "images_kept.png"]


def test_plot_metrics_one_panel_without_propagation(tmp_path):
    metrics = {f"iteration_{k}": {"mAP": 1.0, "top1": 2.0, "clusters_global": 5, "images_kept": 9}
               for k in range(3)}

    paths = plot_metrics(metrics, str(tmp_path))

    with Image.open(paths[1]) as clusters, Image.open(paths[2]) as kept:
        assert kept.size == clusters.size


def test_accuracy_curves_in_iteration_order_with_dashed_before_lines():
    figure = plots._accuracy_figure(plots._agg_figure_factory()(), iteration_entries(ssgpp_metrics(11)),
                                    {"mAP": 19.1, "top1": 46.8})

    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}

    assert list(lines["mAP"].get_xdata()) == list(range(11))
    assert list(lines["top-1"].get_ydata()) == [60.0 + k for k in range(11)]
    assert lines["mAP before adaptation"].get_linestyle() == "--"
    assert list(lines["mAP before adaptation"].get_ydata()) == [19.1, 19.1]
    assert list(lines["top-1 before adaptation"].get_ydata()) == [46.8, 46.8]


def test_plot_metrics_without_matplotlib(tmp_path, monkeypatch, capsys):
    # an already loaded submodule would still import, so every matplotlib module is hidden
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    plots._warn_missing_matplotlib.cache_clear()

    first = plot_metrics(ssgpp_metrics(2), str(tmp_path / "plots"))
    second = plot_metrics(ssgpp_metrics(2), str(tmp_path / "plots"))

    assert first == [] and second == []
    assert capsys.readouterr().out == "plots skipped: matplotlib is not installed (pip install matplotlib)\n"
    assert not (tmp_path / "plots").exists()
    plots._warn_missing_matplotlib.cache_clear()


def write_jpeg(path, colour) -> str:
    Image.new("RGB", (SIZE[1], SIZE[0]), colour).save(path, quality=95)
    return str(path)


# Gallery colours are far from each other and from green/red, so a sampled pixel names the image.
GALLERY_COLOURS = [(0, 0, 255), (255, 255, 0), (0, 255, 255), (128, 128, 128), (255, 0, 255), (0, 0, 0)]


@pytest.fixture
def ranking_case(tmp_path):
    """Query 0: pid 1 camera 0; query 1: pid 2 camera 1. Gallery items g0..g5 with the colours above."""
    folder = tmp_path / "images"
    folder.mkdir()
    query = [(write_jpeg(folder / "0001_c1_q.jpg", (255, 255, 255)), 1, 0),
             (write_jpeg(folder / "0002_c2_q.jpg", (255, 255, 255)), 2, 1)]
    gallery_ids = [(1, 0), (1, 1), (2, 0), (3, 2), (2, 1), (1, 2)]
    gallery = [(write_jpeg(folder / f"g{i}.jpg", colour), pid, cam)
               for i, (colour, (pid, cam)) in enumerate(zip(GALLERY_COLOURS, gallery_ids))]
    distmat = np.array([[0.1, 0.5, 0.2, 0.9, 0.3, 0.7],
                        [0.4, 0.8, 0.6, 0.2, 0.1, 0.3]])
    return distmat, query, gallery, tmp_path / "ranked"


def shown_gallery(picture: Image.Image, count: int) -> list[int]:
    """Which gallery image is drawn in each of the first ``count`` ranked columns, by its centre colour."""
    shown = []
    for column in range(1, count + 1):
        left, top, right, bottom = cell_box(column, SIZE)
        centre = np.array(picture.getpixel(((left + right) // 2, (top + bottom) // 2)))
        shown.append(int(np.argmin([np.abs(centre - c).sum() for c in GALLERY_COLOURS])))
    return shown


def frame_colour(picture: Image.Image, column: int) -> tuple:
    left, top, _, _ = cell_box(column, SIZE)
    return picture.getpixel((left + visualize.BORDER // 2, top + visualize.BORDER // 2))


def test_ranked_results_exclude_same_camera_and_colour_frames(ranking_case):
    distmat, query, gallery, out_dir = ranking_case

    paths = visualize_ranked_results(distmat, query, gallery, str(out_dir), num_queries=2, topk=4, size=SIZE)

    assert [p.rsplit("/", 1)[1] for p in paths] == ["0_0001_c1_q.png", "1_0002_c2_q.png"]
    assert len(list(out_dir.iterdir())) == 2
    with Image.open(paths[0]) as picture:
        # query 0 (pid 1, camera 0): g0 (distance 0.1) is the same person in the same camera, left out
        assert shown_gallery(picture, 4) == [2, 4, 1, 5]
        assert [frame_colour(picture, c) for c in range(1, 5)] == [RED, RED, GREEN, GREEN]
        assert picture.size[0] == cell_box(4, SIZE)[2] + 1 + visualize.GAP
        assert frame_colour(picture, 0) == (255, 255, 255)  # the query is not framed
    with Image.open(paths[1]) as picture:
        # query 1 (pid 2, camera 1): g4 (distance 0.1) left out; g2 is the same person in another camera
        assert shown_gallery(picture, 4) == [3, 5, 0, 2]
        assert frame_colour(picture, 4) == GREEN
        assert frame_colour(picture, 1) == RED


def test_ranked_results_fewer_queries_are_evenly_spaced(ranking_case):
    distmat, query, gallery, out_dir = ranking_case

    paths = visualize_ranked_results(distmat, query, gallery, str(out_dir), num_queries=1, topk=10, size=SIZE)

    assert [p.rsplit("/", 1)[1] for p in paths] == ["0_0001_c1_q.png"]
    with Image.open(paths[0]) as picture:
        assert shown_gallery(picture, 5) == [2, 4, 1, 5, 3]  # all 5 valid gallery images, topk larger
    assert spaced_indices(10, 3) == [0, 4, 9]
    assert spaced_indices(3, 5) == [0, 1, 2]


def test_ranked_results_reject_mismatched_distmat(ranking_case):
    distmat, query, gallery, out_dir = ranking_case

    with pytest.raises(ValueError, match=r"\(2, 6\)"):
        visualize_ranked_results(distmat[:, :5], query, gallery, str(out_dir), num_queries=1, size=SIZE)


def test_ranked_results_unreadable_image_names_file(ranking_case):
    distmat, query, gallery, out_dir = ranking_case
    broken = out_dir.parent / "images" / "g2.jpg"
    broken.write_bytes(b"not a jpeg")

    with pytest.raises(UserError, match="g2.jpg"):
        visualize_ranked_results(distmat, query, gallery, str(out_dir), num_queries=1, topk=3, size=SIZE)


def test_write_atomically_leaves_nothing_when_writing_fails(tmp_path):
    def fail_halfway(tmp):
        with open(tmp, "wb") as stream:
            stream.write(b"\x89PNG half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        osutils.write_atomically(str(tmp_path / "accuracy.png"), fail_halfway)

    assert list(tmp_path.iterdir()) == []
