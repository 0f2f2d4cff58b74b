"""grouping.png: the clusters per feature type and the share of images kept per iteration, from metrics.json
entries old and new."""
import math

from PIL import Image

from reid.utils import plots
from reid.utils.plots import StageCurve, kept_percent, plot_grouping


def entry(k: int, **extra) -> dict:
    return {"clusters_global": 70 + k, "clusters_upper": 60 + k, "clusters_lower": 50 + k, "images_kept": 1000 + k,
            **extra}


def stages() -> list[StageCurve]:
    """SSG with the share recorded from iteration 1 on (iteration 0: an older entry), SSG++ with the totals."""
    ssg = {"before": {"mAP": 30.0}, "iteration_0": entry(0)}
    ssg.update({f"iteration_{k}": entry(k, kept_percent=80.0 + k) for k in (1, 2, 3)})
    ssgpp = {f"iteration_{k}": entry(k, images_total=1376) for k in range(4)}
    return [StageCurve("SSG", ssg), StageCurve("SSG++", ssgpp)]


def test_the_kept_share_is_recorded_or_computed_and_missing_in_older_entries():
    assert kept_percent({"kept_percent": 84.5, "images_kept": 1, "images_total": 2}) == 84.5
    assert kept_percent({"images_kept": 1161, "images_total": 1376}) == 100 * 1161 / 1376
    assert kept_percent({"images_kept": 1161}) is None and kept_percent({}) is None


def test_grouping_figure_has_a_line_per_stage_and_type_and_gaps_for_old_entries():
    figure = plots._grouping_figure(plots._agg_figure_factory()(), stages(), "synth_a -> folder:crops")

    clusters, kept = figure.axes
    lines = {line.get_label(): line for line in clusters.get_lines()}
    assert sorted(lines) == ["SSG global", "SSG lower", "SSG upper", "SSG++ global", "SSG++ lower", "SSG++ upper"]
    assert list(lines["SSG upper"].get_ydata()) == [60, 61, 62, 63]
    assert lines["SSG upper"].get_linestyle() == "--" and lines["SSG global"].get_linestyle() == "-"
    shares = {line.get_label(): list(line.get_ydata()) for line in kept.get_lines()}
    assert math.isnan(shares["SSG"][0]) and shares["SSG"][1:] == [81.0, 82.0, 83.0]
    assert shares["SSG++"] == [100 * (1000 + k) / 1376 for k in range(4)]
    assert kept.get_ylim() == (0, 100)


def test_plot_grouping_writes_a_png(tmp_path):
    fpath = tmp_path / "grouping.png"

    assert plot_grouping(stages(), "synth_a -> folder:crops", str(fpath)) == str(fpath)

    with Image.open(fpath) as image:
        assert image.format == "PNG" and image.height > image.width / 2
        assert image.convert("L").getextrema()[0] < 100
    assert [p.name for p in tmp_path.iterdir()] == ["grouping.png"]
