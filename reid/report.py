"""The results of a run, the way the paper reported them and the honest way.

    python -m reid.report LOGS_DIR

``LOGS_DIR`` is one run's logs dir (it holds ``metrics.json``) or run.sh's, whose ``source/``, ``ssg/`` and
``ssgpp/`` stages are reported in that order. For an adaptation stage the table shows the target's mAP and
CMC top-1/5/10 before adaptation, after the last iteration, and at the best iteration. The target has no
labels to validate on, so the released code picked that best iteration by top-1 on the target *test* set (the
best initialised with the before-adaptation top-1), printed it, and that is the figure the paper reports;
``model_best.pth.tar`` follows the same rule. "last" is the honest figure. With ``--rerank`` the columns with
k-reciprocal re-ranking follow. For a published pair (SSG-SPEC section 9: the table of the authors' SSG README)
the published before-adaptation row and the stage's row are printed beneath, with the differences; a source
model tested on its own dataset gets the README's source-only row and the difference.

Each stage's table is followed by its cost (what ``reid.utils.cost`` recorded): seconds per phase and peak
memory of the whole stage and per iteration or epoch, the slowest phase, and where it ran. For a run cut short
(fewer iterations or epochs than the paper's 30 x 70 for adaptation, 150 for the source) a projection of the
paper's setting with the run's own data, model and machine follows, labelled as a projection; the formula is
printed with its numbers (:func:`adaptation_projection`, :func:`source_projection`).

It also draws ``LOGS_DIR/report.png``: the target mAP per iteration of SSG and SSG++ against the
before-adaptation line, with the published figures marked for a published pair.
"""
from __future__ import annotations

import os

import numpy as np

from reid.arguments import ArgumentParser
from reid.utils.cost import describe_header
from reid.utils.errors import UserError
from reid.utils.logging import read_json
from reid.utils.plots import StageCurve, iteration_entries, plot_report
from reid.utils.runtime import run_main

STAGES = ("source", "ssg", "ssgpp")
METRICS = ("mAP", "top1", "top5", "top10")
HEADERS = ("mAP", "top-1", "top-5", "top-10")
RERANK_SUFFIX = "_rerank"
BEST_LABEL = "best (selected on the target test set, as the original)"
DIFFERENCE_SUFFIX = " - published"
# The table of the authors' SSG README (SSG-SPEC section 9), in percent, by stage ("before" adaptation, "SSG",
# "SSG++") and (source, target): R1 and mAP, and for SSG the R5/R10 that the ICCV 2019 paper adds to the same row.
PUBLISHED: dict[tuple[str, str, str], dict[str, float]] = {
    ("before", "market1501", "dukemtmc"): {"mAP": 16.1, "top1": 30.5},
    ("SSG", "market1501", "dukemtmc"): {"mAP": 53.4, "top1": 73.0, "top10": 83.2},
    ("SSG++", "market1501", "dukemtmc"): {"mAP": 60.3, "top1": 76.0},
    ("before", "dukemtmc", "market1501"): {"mAP": 26.6, "top1": 54.6},
    ("SSG", "dukemtmc", "market1501"): {"mAP": 58.3, "top1": 80.0, "top5": 90.0, "top10": 92.4},
    ("SSG++", "dukemtmc", "market1501"): {"mAP": 68.7, "top1": 86.2},
    ("before", "market1501", "msmt17"): {"mAP": 2.7, "top1": 8.6},
    ("SSG", "market1501", "msmt17"): {"mAP": 13.2, "top1": 31.6},
    ("SSG++", "market1501", "msmt17"): {"mAP": 16.6, "top1": 37.6},
    ("before", "dukemtmc", "msmt17"): {"mAP": 3.82, "top1": 12.38},
    ("SSG", "dukemtmc", "msmt17"): {"mAP": 13.3, "top1": 32.2},
    ("SSG++", "dukemtmc", "msmt17"): {"mAP": 18.3, "top1": 41.6},
}
# The SSG README's source-only row: the source model tested on its own dataset, in percent.
PUBLISHED_SOURCE: dict[str, dict[str, float]] = {
    "dukemtmc": {"mAP": 70.5, "top1": 82.6},
    "market1501": {"mAP": 80.8, "top1": 92.5},
    "msmt17": {"mAP": 48.6, "top1": 73.6},
}

Row = tuple[str, str, "dict | None"]  # label, iteration, metrics
# The paper's setting (SSG-SPEC sections 3-5): what a projection of a run cut short assumes.
PAPER_ITERATIONS = 30
PAPER_EPOCHS = 70
PAPER_LABEL_ITERATION = 5
PAPER_SOURCE_EPOCHS = 150
PHASES = ("features", "grouping", "propagation", "training", "validation", "evaluation", "checkpoint")
OTHER = "other"  # what no phase covers: plots, logs, the loaders' set-up
CostRow = tuple[str, dict[str, float], "float | None", "float | None"]  # label, seconds, peak RSS, peak GPU (GiB)


def best_iteration(metrics: dict) -> tuple[int | None, dict | None]:
    """The iteration the released code reported: the first whose target top-1 beats every earlier one and the
    before-adaptation top-1 (None when no iteration beats it), with its entry."""
    best_top1 = metrics.get("before", {}).get("top1", float("-inf"))
    best: tuple[int | None, dict | None] = (None, None)
    for iteration, entry in iteration_entries(metrics):
        if entry["top1"] > best_top1:
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
    keys = [*METRICS, *(f"{key}{RERANK_SUFFIX}" for key in METRICS if rerank)]
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
    if os.path.isfile(os.path.join(logs_dir, "metrics.json")):
        return [logs_dir]
    found = [os.path.join(logs_dir, stage) for stage in STAGES
             if os.path.isfile(os.path.join(logs_dir, stage, "metrics.json"))]
    if not found:
        raise UserError(f"{logs_dir}: no metrics.json there nor in {', '.join(s + '/' for s in STAGES)}; give the "
                        "logs dir of a run or the one run.sh wrote")
    return found


def read_stage(stage_dir: str) -> tuple[dict, dict]:
    """A stage's metrics.json and args.json (empty when missing)."""
    args_path = os.path.join(stage_dir, "args.json")
    return read_json(os.path.join(stage_dir, "metrics.json")), read_json(args_path) if os.path.isfile(args_path) else {}


def stage_name(args: dict) -> str:
    return "SSG++" if "label_iteration" in args else "SSG"


def report_stage(stage_dir: str) -> str:
    """The table of one stage, read from its metrics.json and args.json."""
    metrics, args = read_stage(stage_dir)
    if "before" not in metrics:
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
    return f"{table}\n{cost_section(metrics, args)}"


def costs(entries: list) -> list[dict]:
    """The ``cost`` of each entry that has one."""
    return [entry["cost"] for entry in entries if isinstance(entry, dict) and "cost" in entry]


def add_costs(label: str, entries: list[dict], per: int = 1) -> CostRow:
    """The seconds of ``entries`` (cost dicts) summed per phase and divided by ``per`` (their number gives the
    mean), with ``other`` = total less the phases; the peaks are the entries' largest."""
    seconds: dict[str, float] = {}
    for cost in entries:
        for name, value in cost["seconds"].items():
            seconds[name] = seconds.get(name, 0.0) + value / per
    seconds[OTHER] = seconds.get("total", 0.0) - sum(value for name, value in seconds.items() if name != "total")
    rss = [cost["peak_rss_gib"] for cost in entries if cost.get("peak_rss_gib") is not None]
    gpu = [cost["peak_gpu_gib"] for cost in entries if cost.get("peak_gpu_gib") is not None]
    return label, seconds, max(rss, default=None), max(gpu, default=None)


def format_cost_table(title: str, rows: list[CostRow]) -> str:
    """Seconds per phase (the phases any row has), other, total, then peak memory in GiB."""
    seen = {name for _, seconds, _, _ in rows for name in seconds} - {OTHER, "total"}
    columns = [*(name for name in PHASES if name in seen), *sorted(seen - set(PHASES)), OTHER, "total"]
    gpu = any(peak is not None for *_, peak in rows)
    headers = [*columns, "peak RSS", *(["peak GPU"] if gpu else [])]
    width = max(len(label) for label, *_ in rows) + 2
    lines = [title, " " * width + "".join(f"{header:>12}" for header in headers)]
    for label, seconds, rss, gpu_peak in rows:
        cells = [f"{seconds[name]:.1f}" if name in seconds else "-" for name in columns]
        cells += [_gib(rss), *([_gib(gpu_peak)] if gpu else [])]
        lines.append(f"{label:<{width}}" + "".join(f"{cell:>12}" for cell in cells))
    return "\n".join(lines)


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def duration(seconds: float) -> str:
    """Seconds, minutes or hours, whichever reads best."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def slowest_phase(row: CostRow) -> str:
    _, seconds, _, _ = row
    phases = {name: value for name, value in seconds.items() if name not in (OTHER, "total")}
    if not phases or not seconds.get("total"):
        return "slowest phase: -"
    name = max(phases, key=phases.get)
    return f"slowest phase: {name}, {100 * phases[name] / seconds['total']:.0f}% of {duration(seconds['total'])}"


def where_it_ran(metrics: dict) -> list[str]:
    """The run's header, and those of its resumed starts where the machine or settings changed."""
    headers = metrics.get("run") or []
    if not headers:
        return ["ran on: not recorded"]
    first = describe_header(headers[0])
    lines = [f"ran on: {first}"]
    others = [describe_header(header) for header in headers[1:]]
    if others:
        same = sum(line == first for line in others)
        lines.append(f"resumed {len(others)} time{'s' if len(others) > 1 else ''}"
                     + (f", {same} on the same machine and settings" if same else ""))
        lines += [f"resumed on: {line}" for line in others if line != first]
    return lines


def iteration_rates(entries: list[dict], epochs: int) -> tuple[float, float]:
    """An iteration's fixed cost (its total less its training: features, grouping, evaluation, checkpoint,
    other), the mean of ``entries``, and the seconds of one training epoch: the entries' training seconds over
    their ``len(entries) x epochs`` epochs."""
    seconds = [entry["cost"]["seconds"] for entry in entries]
    fixed = float(np.mean([s["total"] - s.get("training", 0.0) for s in seconds]))
    return fixed, sum(s.get("training", 0.0) for s in seconds) / (len(entries) * epochs)


def adaptation_projection(metrics: dict, epochs: int | None, semi: bool) -> list[str]:
    """For a run cut short, the paper's 30 iterations x 70 epochs projected from the run's own measurements:

        before-adaptation evaluation + sum over the kinds of iteration of n x (fixed + 70 x epoch)

    with ``fixed`` and ``epoch`` from :func:`iteration_rates`. SSG has one kind (n = 30). SSG++ has two: the
    iterations before its labelled set is drawn (n = 5 in the paper) and those with labels, which also
    propagate and train on a labelled batch (n = 25); a kind the run never reached takes the other's figures,
    and the line says so. The first iteration's one-off costs (eps, warm-up) are in the mean, so a projection
    from few iterations errs high."""
    entries = [entry for _, entry in iteration_entries(metrics) if "cost" in entry]
    if not entries or not epochs or (len(entries) >= PAPER_ITERATIONS and epochs >= PAPER_EPOCHS):
        return []
    kinds = [("", entries, PAPER_ITERATIONS)]
    if semi:
        kinds = [("before the labelled set", [e for e in entries if "labelled" not in e], PAPER_LABEL_ITERATION),
                 ("with labels", [e for e in entries if "labelled" in e], PAPER_ITERATIONS - PAPER_LABEL_ITERATION)]
    before = metrics.get("before", {}).get("cost", {}).get("seconds", {}).get("total", 0.0)
    total, terms = before, [f"before-adaptation evaluation {before:.1f} s"]
    for name, measured, count in kinds:
        used = measured or next(kind[1] for kind in kinds if kind[1])
        fixed, per_epoch = iteration_rates(used, epochs)
        total += count * (fixed + PAPER_EPOCHS * per_epoch)
        source = f"{len(used)} measured" if measured else "none measured, the other kind's figures"
        terms.append(f"{count} x (fixed {fixed:.1f} s + {PAPER_EPOCHS} x epoch {per_epoch:.2f} s)"
                     + (f" [iterations {name}: {source}]" if name else ""))
    return [f"projection, not a measurement: the paper's {PAPER_ITERATIONS} iterations x {PAPER_EPOCHS} epochs with "
            f"this run's data, model and machine: {duration(total)}",
            "  = " + " + ".join(terms),
            "  fixed: an iteration's total less its training, mean of those measured; epoch: their training "
            f"seconds / (their number x {epochs} epochs)"]


def source_projection(metrics: dict) -> list[str]:
    """For a source run cut short, the paper's 150 epochs, each validated, projected from the run's own
    measurements: 150 x (epoch + validation) + the test evaluations, where ``epoch`` is the mean of an epoch's
    total less its validation and ``validation`` the mean of the validated epochs' (0 when none was)."""
    entries = [entry for entry in metrics.get("epochs", []) if "cost" in entry]
    if not entries or len(entries) >= PAPER_SOURCE_EPOCHS:
        return []
    seconds = [entry["cost"]["seconds"] for entry in entries]
    epoch = float(np.mean([s["total"] - s.get("validation", 0.0) for s in seconds]))
    validated = [s["validation"] for s in seconds if "validation" in s]
    validation = float(np.mean(validated)) if validated else 0.0
    tests = sum(cost["seconds"]["total"] for cost in costs(
        [entry for key, entry in metrics.items() if key.startswith("test_")]))
    total = PAPER_SOURCE_EPOCHS * (epoch + validation) + tests
    return [f"projection, not a measurement: the paper's {PAPER_SOURCE_EPOCHS} epochs, each validated, with this run's "
            f"data, model and machine: {duration(total)}",
            f"  = {PAPER_SOURCE_EPOCHS} x (epoch {epoch:.1f} s + validation {validation:.1f} s) + test evaluations "
            f"{tests:.1f} s",
            f"  epoch: an epoch's total less its validation, mean of {len(entries)}; validation: "
            + (f"mean of the {len(validated)} validated epochs" if validated else "none in this run, not counted")]


def cost_section(metrics: dict, args: dict) -> str:
    """The cost table of a stage (its iterations or epochs: all and the mean of one; the before-adaptation or
    test evaluations; the stage), its slowest phase, where it ran and, for a run cut short, the projection."""
    if "before" in metrics:
        unit, parts = "iteration", costs([entry for _, entry in iteration_entries(metrics)])
        evaluations = costs([metrics.get("before")])
        evaluations_label = "before-adaptation evaluation"
        projection = adaptation_projection(metrics, args.get("epochs"), "label_iteration" in args)
    else:
        unit, parts = "epoch", costs(metrics.get("epochs", []))
        evaluations = costs([entry for key, entry in metrics.items() if key.startswith("test_")])
        evaluations_label = f"test evaluations ({len(evaluations)})"
        projection = source_projection(metrics)
    if not parts and not evaluations:
        return "cost: not recorded in this metrics.json"
    rows = [add_costs(f"{unit}s ({len(parts)})", parts), add_costs(f"per {unit}", parts, len(parts))] if parts else []
    rows += [add_costs(evaluations_label, evaluations)] if evaluations else []
    rows.append(add_costs("stage total", parts + evaluations))
    title = "cost: seconds; peak memory in GiB (RSS of the main process, GPU tensors)"
    return "\n".join([format_cost_table(title, rows), slowest_phase(rows[-1]), *where_it_ran(metrics), *projection])


def report_figure(stage_dirs: list[str], fpath: str) -> str | None:
    """Draw ``report.png`` of the adaptation stages among ``stage_dirs``; None when there is none."""
    curves, pair = [], ("?", "?")
    for stage_dir in stage_dirs:
        metrics, args = read_stage(stage_dir)
        if "before" in metrics:
            name, pair = stage_name(args), (args.get("src_dataset", "?"), args.get("tgt_dataset", "?"))
            curves.append(StageCurve(name, metrics, PUBLISHED.get((name, *pair), {}).get("mAP"),
                                     args.get("label_iteration")))
    if not curves:
        return None
    return plot_report(curves, f"{pair[0]} -> {pair[1]}: target mAP per iteration", fpath)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("logs_dir", help="a run's logs dir, or the one run.sh wrote (source/, ssg/, ssgpp/)")
    args = parser.parse_args(argv)
    stages = stage_dirs(args.logs_dir)
    print("\n\n".join(report_stage(stage_dir) for stage_dir in stages))
    figure = report_figure(stages, os.path.join(args.logs_dir, "report.png"))
    if figure:
        print(f"figure: {figure}")


if __name__ == "__main__":
    raise SystemExit(run_main(main))
