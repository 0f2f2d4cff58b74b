"""Curves of an SSG / SSG++ adaptation run (Self-similarity Grouping, ICCV 2019) drawn from its metrics.json.

``metrics.json`` holds an optional ``before`` entry (the source model on the target) and one
``iteration_<k>`` entry per adaptation iteration with mAP, CMC top-1 (percent), ``clusters_<type>`` per
feature type, ``images_kept`` (and, where recorded, ``kept_percent`` and ``images_total``,
:func:`reid.grouping.grouping_stats`) and, for SSG++, ``labelled``, ``propagated`` and
``propagated_accuracy``. An entry may lack any of them: its point is left out of the curve.

matplotlib is optional: without it the plots are skipped with one line of explanation. Figures are drawn on
``matplotlib.figure.Figure`` with the Agg canvas, so the caller's pyplot state and backend are left alone.
"""
from __future__ import annotations

import functools
import itertools
import math
import os
from dataclasses import dataclass
from typing import Callable

from reid.utils.osutils import write_atomically

ITERATION_PREFIX = "iteration_"
MISSING_MATPLOTLIB = "plots skipped: matplotlib is not installed (pip install matplotlib)"
FIGURE_SIZE = (7.0, 4.0)
DPI = 110


def iteration_entries(metrics: dict) -> list[tuple[int, dict]]:
    """The ``iteration_<k>`` entries as ``(k, entry)``, sorted by k as a number (10 comes after 9)."""
    entries = []
    for key, entry in metrics.items():
        suffix = key[len(ITERATION_PREFIX):]
        if key.startswith(ITERATION_PREFIX) and suffix.isdigit():
            entries.append((int(suffix), entry))
    return sorted(entries, key=lambda item: item[0])


def feature_types(entries: list[tuple[int, dict]]) -> list[str]:
    """The ``<type>`` of every ``clusters_<type>`` key, in order of first appearance (global, upper, ...)."""
    names: dict[str, None] = {}
    for _, entry in entries:
        names.update((key[len("clusters_"):], None) for key in entry if key.startswith("clusters_"))
    return list(names)


@functools.cache
def _warn_missing_matplotlib() -> None:
    """Cached so that a run plotting after every iteration says it once."""
    print(MISSING_MATPLOTLIB)


def _agg_figure_factory() -> Callable[[], object] | None:
    """A function returning a new Figure attached to an Agg canvas, or None without matplotlib."""
    try:
        import matplotlib  # noqa: F401  (imported first so that a missing package fails here)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None

    def new_figure():
        figure = Figure(figsize=FIGURE_SIZE, dpi=DPI)
        FigureCanvasAgg(figure)
        return figure

    return new_figure


def plot_metrics(metrics: dict, out_dir: str) -> list[str]:
    """Write ``accuracy.png`` (when the run was evaluated), ``clusters.png`` and ``images_kept.png`` for one
    adaptation run.

    Parameters
    ----------
    metrics : dict
        The content of the run's metrics.json (``before`` and ``iteration_<k>`` entries).
    out_dir : str
        Folder for the PNGs, created when missing.

    Returns
    -------
    list of str
        The paths written; empty when matplotlib is not installed (a line says so, once per process).
    """
    new_figure = _agg_figure_factory()
    if new_figure is None:
        _warn_missing_matplotlib()
        return []
    os.makedirs(out_dir, exist_ok=True)
    entries = iteration_entries(metrics)
    figures = {}
    if "before" in metrics or _has_values(entries, "mAP"):  # a target without a labelled test set has none
        figures["accuracy.png"] = _accuracy_figure(new_figure(), entries, metrics.get("before"))
    figures.update({"clusters.png": _clusters_figure(new_figure(), entries),
                    "images_kept.png": _images_kept_figure(new_figure(), entries)})
    paths = []
    for name, figure in figures.items():
        path = os.path.join(out_dir, name)
        write_atomically(path, functools.partial(figure.savefig, format="png"))
        paths.append(path)
    return paths


@dataclass
class StageCurve:
    """One adaptation stage of a report figure: its name (SSG, SSG++), its metrics.json and, for a published
    pair, the published target mAP after the whole run (the authors' README, reid.paper.PUBLISHED)."""

    name: str
    metrics: dict
    paper_map: float | None = None
    label_iteration: int | None = None  # SSG++: the iteration its labelled set was drawn at


STAGE_COLOURS = {"SSG": "tab:blue", "SSG++": "tab:red"}


def plot_report(stages: list[StageCurve], title: str, fpath: str) -> str | None:
    """``report.png``: the target mAP per iteration of each stage against the before-adaptation line, the
    published figure of each stage marked at the last iteration. Returns the path, or None without matplotlib."""
    return _draw(fpath, lambda figure: _report_figure(figure, stages, title))


def _report_figure(figure, stages: list[StageCurve], title: str):
    axes = figure.add_subplot()
    before = next((stage.metrics["before"]["mAP"] for stage in stages if "before" in stage.metrics), None)
    if before is not None:
        axes.axhline(before, linestyle="--", color="tab:gray", label=f"before adaptation ({before:.1f})")
    last_iteration = max((k for stage in stages for k, _ in iteration_entries(stage.metrics)), default=0)
    for stage in stages:
        entries = iteration_entries(stage.metrics)
        colour = STAGE_COLOURS.get(stage.name)
        last = f" (last {entries[-1][1]['mAP']:.1f})" if entries else ""
        axes.plot([k for k, _ in entries], _series(entries, "mAP"), marker="o", markersize=4, color=colour,
                  label=stage.name + last)
        if stage.label_iteration is not None and stage.label_iteration <= last_iteration:
            axes.axvline(stage.label_iteration, linestyle=":", color=colour, alpha=0.6,
                         label=f"{stage.name}: labelled set drawn")
        if stage.paper_map is not None:
            axes.axhline(stage.paper_map, linestyle=":", color=colour)
            axes.plot([last_iteration], [stage.paper_map], marker="*", markersize=12, linestyle="none",
                      color=colour, label=f"{stage.name}, published ({stage.paper_map:.1f})")
    _style_axes(axes, "target mAP (%)", title)
    figure.tight_layout()
    return figure


def plot_grouping(stages: list[StageCurve], title: str, fpath: str) -> str | None:
    """``grouping.png``: per iteration of each stage, the clusters of every feature type (above) and the share
    of the target's images kept for training (below). Returns the path, or None without matplotlib."""
    return _draw(fpath, lambda figure: _grouping_figure(figure, stages, title))


def _draw(fpath: str, draw: Callable) -> str | None:
    """Write the figure ``draw`` makes of a new figure to ``fpath``; the path, or None without matplotlib."""
    new_figure = _agg_figure_factory()
    if new_figure is None:
        _warn_missing_matplotlib()
        return None
    write_atomically(fpath, functools.partial(draw(new_figure()).savefig, format="png"))
    return fpath


TYPE_LINESTYLES = ("-", "--", ":", "-.")


def kept_percent(entry: dict) -> float | None:
    """The share of images kept (percent): recorded, or computed from ``images_kept`` and ``images_total``;
    None for an entry that holds neither (written before the share was recorded)."""
    if entry.get("kept_percent") is not None:
        return float(entry["kept_percent"])
    if entry.get("images_kept") is not None and entry.get("images_total"):
        return 100 * entry["images_kept"] / entry["images_total"]
    return None


def _grouping_figure(figure, stages: list[StageCurve], title: str):
    figure.set_size_inches(FIGURE_SIZE[0], FIGURE_SIZE[1] * 1.6)
    clusters = figure.add_subplot(2, 1, 1)
    kept = figure.add_subplot(2, 1, 2, sharex=clusters)
    for stage in stages:
        entries = iteration_entries(stage.metrics)
        iterations = [k for k, _ in entries]
        colour = STAGE_COLOURS.get(stage.name)
        for name, style in zip(feature_types(entries), itertools.cycle(TYPE_LINESTYLES)):
            clusters.plot(iterations, _series(entries, f"clusters_{name}"), marker="o", markersize=3,
                          linestyle=style, color=colour, label=f"{stage.name} {name}")
        shares = [kept_percent(entry) for _, entry in entries]
        kept.plot(iterations, [math.nan if share is None else share for share in shares], marker="o",
                  markersize=3, color=colour, label=stage.name)
    _style_axes(clusters, "clusters (DBSCAN)", title)
    _style_axes(kept, "% of target images", "Images kept for training (in a cluster of every feature type)")
    kept.set_ylim(0, 100)
    figure.tight_layout()
    return figure


def _series(entries: list[tuple[int, dict]], key: str) -> list[float]:
    """One value per iteration; NaN where the entry lacks it, so that the line shows a gap."""
    values = []
    for _, entry in entries:
        value = entry.get(key)
        values.append(math.nan if value is None else float(value))
    return values


def _has_values(entries: list[tuple[int, dict]], key: str) -> bool:
    return any(entry.get(key) is not None for _, entry in entries)


def _style_axes(axes, ylabel: str, title: str) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.set_xlabel("iteration")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="best", fontsize="small")


def _accuracy_figure(figure, entries: list[tuple[int, dict]], before: dict | None):
    axes = figure.add_subplot()
    iterations = [k for k, _ in entries]
    for key, label, colour in (("mAP", "mAP", "tab:blue"), ("top1", "top-1", "tab:orange")):
        axes.plot(iterations, _series(entries, key), marker="o", markersize=3, color=colour, label=label)
        if before and before.get(key) is not None:
            axes.axhline(before[key], linestyle="--", color=colour, label=f"{label} before adaptation")
    _style_axes(axes, "%", "Target accuracy per iteration")
    figure.tight_layout()
    return figure


def _clusters_figure(figure, entries: list[tuple[int, dict]]):
    axes = figure.add_subplot()
    iterations = [k for k, _ in entries]
    for name in feature_types(entries):
        axes.plot(iterations, _series(entries, f"clusters_{name}"), marker="o", markersize=3, label=name)
    _style_axes(axes, "clusters (DBSCAN)", "Clusters per feature type")
    figure.tight_layout()
    return figure


def _images_kept_figure(figure, entries: list[tuple[int, dict]]):
    with_propagation = _has_values(entries, "propagated_accuracy")
    if with_propagation:
        figure.set_size_inches(FIGURE_SIZE[0], FIGURE_SIZE[1] * 1.6)
    iterations = [k for k, _ in entries]
    axes = figure.add_subplot(2 if with_propagation else 1, 1, 1)
    axes.plot(iterations, _series(entries, "images_kept"), marker="o", markersize=3, label="kept by grouping")
    if _has_values(entries, "propagated"):
        labelled_set = [a + b for a, b in zip(_series(entries, "labelled"), _series(entries, "propagated"))]
        axes.plot(iterations, labelled_set, marker="s", markersize=3, label="labelled + propagated (SSG++)")
    _style_axes(axes, "images", "Target images trained on")
    if with_propagation:
        lower = figure.add_subplot(2, 1, 2, sharex=axes)
        lower.plot(iterations, _series(entries, "propagated_accuracy"), marker="o", markersize=3,
                   color="tab:green")
        _style_axes(lower, "% correct", "Accuracy of the propagated labels")
    figure.tight_layout()
    return figure
