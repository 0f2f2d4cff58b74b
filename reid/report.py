"""The results of a run, the way the paper reported them and the honest way.

    python -m reid.report LOGS_DIR

``LOGS_DIR`` is one run's logs dir (it holds ``metrics.json``) or run.sh's, whose ``source/``, ``ssg/`` and
``ssgpp/`` stages are reported in that order. For an adaptation stage the table shows the target's mAP and
CMC top-1/5/10 before adaptation, after the last iteration, and at the best iteration. The target has no
labels to validate on, so the released code picked that best iteration by top-1 on the target *test* set (the
best initialised with the before-adaptation top-1), printed it, and that is the figure the paper reports;
``model_best.pth.tar`` follows the same rule. "last" is the honest figure. With ``--rerank`` the columns with
k-reciprocal re-ranking follow. For a published pair (:data:`reid.paper.PUBLISHED`, the table of the authors'
SSG README) the published before-adaptation row and the stage's row are printed beneath, with the
differences; a source model tested on its own dataset gets the README's source-only row and the difference.

Each stage's table is followed by its cost (:mod:`reid.cost.tables`): seconds per phase and peak memory of the
whole stage and per iteration or epoch, the slowest phase, and where it ran; for a run cut short (fewer
iterations or epochs than the paper's 30 x 70 for adaptation, 150 for the source), the paper's setting
projected with the run's own data, model and machine, labelled as a projection.

It also draws ``LOGS_DIR/report.png``: the target mAP per iteration of SSG and SSG++ against the
before-adaptation line, with the published figures marked for a published pair; and ``LOGS_DIR/grouping.png``:
the clusters per feature type and the share of images kept per iteration, which a target without labels is
judged by (its stages print a grouping table instead of accuracy).
"""
from __future__ import annotations

import os

from reid.cost.tables import cost_section, is_adaptation
from reid.evaluators import RERANK_SUFFIX
from reid.paper import PUBLISHED, PUBLISHED_SOURCE
from reid.utils.cli import ArgumentParser
from reid.utils.errors import UserError
from reid.utils.plots import StageCurve, feature_types, iteration_entries, kept_percent, plot_grouping, plot_report
from reid.utils.records import ARGS, METRICS, read_json
from reid.utils.runtime import run_main

STAGES = ("source", "ssg", "ssgpp")
ACCURACY_KEYS = ("mAP", "top1", "top5", "top10")
HEADERS = ("mAP", "top-1", "top-5", "top-10")
BEST_LABEL = "best (selected on the target test set, as the original)"
DIFFERENCE_SUFFIX = " - published"
Row = tuple[str, str, "dict | None"]  # label, iteration, metrics


def best_iteration(metrics: dict) -> tuple[int | None, dict | None]:
    """The iteration the released code reported: the first whose target top-1 beats every earlier one and the
    before-adaptation top-1 (None when no iteration beats it), with its entry."""
    best_top1 = metrics.get("before", {}).get("top1", float("-inf"))
    best: tuple[int | None, dict | None] = (None, None)
    for iteration, entry in iteration_entries(metrics):
        if entry.get("top1", float("-inf")) > best_top1:
            best_top1, best = entry["top1"], (iteration, entry)
    return best


def adaptation_rows(metrics: dict) -> list[Row]:
    """before adaptation, last and best rows of an adaptation stage's metrics."""
    iterations = iteration_entries(metrics)
    rows: list[Row] = [("before adaptation", "-", metrics.get("before"))]
    if iterations:
        last_iteration, last = iterations[-1]
        rows.append(("last", str(last_iteration), last))
        iteration, best = best_iteration(metrics)
        rows.append((BEST_LABEL, "-" if iteration is None else str(iteration), best or metrics.get("before")))
    return rows


def difference(label: str, iteration: str, metrics: dict, published: dict[str, float]) -> Row:
    """``metrics`` less ``published``, on the metrics that were published."""
    return (f"{label}{DIFFERENCE_SUFFIX}", iteration, {k: metrics[k] - v for k, v in published.items()})


def published_rows(stage: str, source: str, target: str, rows: list[Row]) -> list[Row]:
    """The README's before-adaptation row and this stage's row for the pair, then the differences of the
    before-adaptation row to the first and of the last and best rows to the second."""
    before, after = PUBLISHED.get(("before", source, target)), PUBLISHED.get((stage, source, target))
    if not before or not after:
        return []
    published = [("published before adaptation", "-", before), (f"published {stage}", "-", after)]
    differences = []
    for label, iteration, metrics in rows:
        if metrics:
            name = label if label == "before adaptation" else label.split(" ")[0]
            differences.append(difference(name, iteration, metrics, before if name == "before adaptation" else after))
    return published + differences


def source_rows(metrics: dict, dataset: str) -> list[Row]:
    """One row per dataset the selected source model was tested on; for ``dataset`` itself the README's
    source-only row and the difference follow."""
    selected = metrics.get("selected_epoch")
    epoch = "-" if selected is None else str(selected)
    rows: list[Row] = [(f"test on {key[len('test_'):]}", epoch, entry) for key, entry in metrics.items()
                       if key.startswith("test_")]
    own, published = metrics.get(f"test_{dataset}"), PUBLISHED_SOURCE.get(dataset)
    if own and published:
        rows += [("published source only", "-", published), difference(f"test on {dataset}", epoch, own, published)]
    return rows


def format_table(title: str, rows: list[Row], iteration_header: str = "iteration") -> str:
    """A plain-text table: label, iteration and the metrics (with re-ranking columns when any row has them)."""
    rerank = any(metrics and f"mAP{RERANK_SUFFIX}" in metrics for _, _, metrics in rows)
    keys = [*ACCURACY_KEYS, *(f"{key}{RERANK_SUFFIX}" for key in ACCURACY_KEYS if rerank)]
    headers = [*HEADERS, *(f"rr {header}" for header in HEADERS if rerank)]
    width = max(len(label) for label, _, _ in rows) + 2
    lines = [title, f"{'':<{width}}{iteration_header:>9}" + "".join(f"{header:>10}" for header in headers)]
    for label, iteration, metrics in rows:
        signed = label.endswith(DIFFERENCE_SUFFIX)
        cells = [_cell((metrics or {}).get(key), signed) for key in keys]
        lines.append(f"{label:<{width}}{iteration:>9}" + "".join(f"{cell:>10}" for cell in cells))
    return "\n".join(lines)


def _cell(value: float | None, signed: bool) -> str:
    if value is None:
        return "-"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def stage_dirs(logs_dir: str) -> list[str]:
    """The logs dirs to report: ``logs_dir`` itself when it holds metrics.json, else its run.sh stages."""
    if os.path.isfile(os.path.join(logs_dir, METRICS)):
        return [logs_dir]
    found = [os.path.join(logs_dir, stage) for stage in STAGES
             if os.path.isfile(os.path.join(logs_dir, stage, METRICS))]
    if not found:
        raise UserError(f"{logs_dir}: no metrics.json there nor in {', '.join(s + '/' for s in STAGES)}; give the "
                        "logs dir of a run or the one run.sh wrote")
    return found


def read_stage(stage_dir: str) -> tuple[dict, dict]:
    """A stage's metrics.json and args.json (empty when missing)."""
    args_path = os.path.join(stage_dir, ARGS)
    return read_json(os.path.join(stage_dir, METRICS)), read_json(args_path) if os.path.isfile(args_path) else {}


def stage_name(args: dict) -> str:
    return "SSG++" if "label_iteration" in args else "SSG"


def format_grouping_table(metrics: dict) -> str:
    """Per iteration, what the grouping made of the target: clusters per feature type, the share of images kept
    and the median size of a global cluster (the figures a target without labels is judged by)."""
    entries = iteration_entries(metrics)
    names = feature_types(entries)
    lines = ["grouping: clusters per feature type, images kept for training, median global cluster size",
             f"{'iteration':>9}" + "".join(f"{name:>10}" for name in names) + f"{'kept %':>10}{'median':>10}"]
    for iteration, entry in entries:
        median = (entry.get(f"cluster_sizes_{names[0]}") or {}).get("median") if names else None
        share = kept_percent(entry)
        lines.append(f"{iteration:>9}" + "".join(f"{entry.get(f'clusters_{name}', '-'):>10}" for name in names)
                     + f"{'-' if share is None else f'{share:.1f}':>10}{'-' if median is None else f'{median:g}':>10}")
    return "\n".join(lines)


def report_stage(stage_dir: str) -> str:
    """The tables of one stage, read from its metrics.json and args.json."""
    metrics, args = read_stage(stage_dir)
    if not is_adaptation(metrics, args):
        title = f"source model: {args.get('dataset', '?')}, epoch selected on "
        title += "the last epoch (--combine-trainval)" if args.get("combine_trainval") else "validation top-1"
        rows = source_rows(metrics, args.get("dataset", "?"))
        table = format_table(f"{title}   ({stage_dir})", rows, iteration_header="epoch")
    else:
        stage = stage_name(args)
        source, target = args.get("src_dataset", "?"), args.get("tgt_dataset", "?")
        rows = adaptation_rows(metrics)
        rows += published_rows(stage, source, target, rows)
        seed = f", seed {args['seed']}" if "seed" in args else ""
        table = format_table(f"{stage}: {source} -> {target}{seed}   ({stage_dir})", rows)
        if "before" not in metrics and not any("mAP" in entry for _, entry in iteration_entries(metrics)):
            table += "\n(nothing labelled to evaluate on: the target had no query/gallery)"
        table += "\n" + format_grouping_table(metrics)
    return f"{table}\n{cost_section(metrics, args)}"


def report_figures(stage_dirs: list[str], logs_dir: str) -> list[str]:
    """Draw, for the adaptation stages among ``stage_dirs``, ``report.png`` (target mAP per iteration, when a
    stage was evaluated) and ``grouping.png`` (clusters and images kept per iteration) in ``logs_dir``; the
    paths written."""
    curves, pair = [], ("?", "?")
    for stage_dir in stage_dirs:
        metrics, args = read_stage(stage_dir)
        if is_adaptation(metrics, args):
            name, pair = stage_name(args), (args.get("src_dataset", "?"), args.get("tgt_dataset", "?"))
            curves.append(StageCurve(name, metrics, PUBLISHED.get((name, *pair), {}).get("mAP"),
                                     args.get("label_iteration")))
    figures = []
    if any("before" in curve.metrics or any("mAP" in entry for _, entry in iteration_entries(curve.metrics))
           for curve in curves):
        figures.append(plot_report(curves, f"{pair[0]} -> {pair[1]}: target mAP per iteration",
                                   os.path.join(logs_dir, "report.png")))
    if curves:
        figures.append(plot_grouping(curves, f"{pair[0]} -> {pair[1]}: grouping per iteration",
                                     os.path.join(logs_dir, "grouping.png")))
    return [figure for figure in figures if figure]


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("logs_dir", help="a run's logs dir, or the one run.sh wrote (source/, ssg/, ssgpp/)")
    args = parser.parse_args(argv)
    stages = stage_dirs(args.logs_dir)
    print("\n\n".join(report_stage(stage_dir) for stage_dir in stages))
    for figure in report_figures(stages, args.logs_dir):
        print(f"figure: {figure}")


if __name__ == "__main__":
    raise SystemExit(run_main(main))
