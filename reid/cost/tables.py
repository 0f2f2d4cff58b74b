"""What a stage cost, as ``reid.report`` prints it: seconds per phase and peak memory from the ``cost`` of each
record (:mod:`reid.cost.meter`), the slowest phase, where the run ran and, for a run shorter than the paper's,
the paper's schedule (:mod:`reid.paper`) projected with the run's own measurements, labelled as a projection.
"""
from __future__ import annotations

import numpy as np

from reid.cost.meter import describe_header
from reid.paper import ADAPTATION, SOURCE
from reid.utils.plots import iteration_entries

PHASES = ("features", "grouping", "propagation", "training", "validation", "evaluation", "checkpoint")
OTHER = "other"  # what no phase covers: plots, logs, the loaders' set-up
CostRow = tuple[str, dict[str, float], "float | None", "float | None"]  # label, seconds, peak RSS, peak GPU (GiB)


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
    iterations, paper_epochs, labelled_from = ADAPTATION.iterations, ADAPTATION.epochs, ADAPTATION.label_iteration
    if not entries or not epochs or (len(entries) >= iterations and epochs >= paper_epochs):
        return []
    kinds = [("", entries, iterations)]
    if semi:
        kinds = [("before the labelled set", [e for e in entries if "labelled" not in e], labelled_from),
                 ("with labels", [e for e in entries if "labelled" in e], iterations - labelled_from)]
    before = metrics.get("before", {}).get("cost", {}).get("seconds", {}).get("total", 0.0)
    total, terms = before, [f"before-adaptation evaluation {before:.1f} s"]
    for name, measured, count in kinds:
        used = measured or next(kind[1] for kind in kinds if kind[1])
        fixed, per_epoch = iteration_rates(used, epochs)
        total += count * (fixed + paper_epochs * per_epoch)
        source = f"{len(used)} measured" if measured else "none measured, the other kind's figures"
        terms.append(f"{count} x (fixed {fixed:.1f} s + {paper_epochs} x epoch {per_epoch:.2f} s)"
                     + (f" [iterations {name}: {source}]" if name else ""))
    return [f"projection, not a measurement: the paper's {iterations} iterations x {paper_epochs} epochs with "
            f"this run's data, model and machine: {duration(total)}",
            "  = " + " + ".join(terms),
            "  fixed: an iteration's total less its training, mean of those measured; epoch: their training "
            f"seconds / (their number x {epochs} epochs)"]


def source_projection(metrics: dict) -> list[str]:
    """For a source run cut short, the paper's 150 epochs, each validated, projected from the run's own
    measurements: 150 x (epoch + validation) + the test evaluations, where ``epoch`` is the mean of an epoch's
    total less its validation and ``validation`` the mean of the validated epochs' (0 when none was)."""
    entries = [entry for entry in metrics.get("epochs", []) if "cost" in entry]
    if not entries or len(entries) >= SOURCE.epochs:
        return []
    seconds = [entry["cost"]["seconds"] for entry in entries]
    epoch = float(np.mean([s["total"] - s.get("validation", 0.0) for s in seconds]))
    validated = [s["validation"] for s in seconds if "validation" in s]
    validation = float(np.mean(validated)) if validated else 0.0
    tests = sum(cost["seconds"]["total"] for cost in costs(
        [entry for key, entry in metrics.items() if key.startswith("test_")]))
    total = SOURCE.epochs * (epoch + validation) + tests
    return [f"projection, not a measurement: the paper's {SOURCE.epochs} epochs, each validated, with this run's "
            f"data, model and machine: {duration(total)}",
            f"  = {SOURCE.epochs} x (epoch {epoch:.1f} s + validation {validation:.1f} s) + test evaluations "
            f"{tests:.1f} s",
            f"  epoch: an epoch's total less its validation, mean of {len(entries)}; validation: "
            + (f"mean of the {len(validated)} validated epochs" if validated else "none in this run, not counted")]


def is_adaptation(metrics: dict, args: dict) -> bool:
    """Whether a stage's records are an adaptation run's (its args name a target; older runs: a before row)."""
    return "tgt_dataset" in args or "before" in metrics


def cost_section(metrics: dict, args: dict) -> str:
    """The cost table of a stage (its iterations or epochs: all and the mean of one; the before-adaptation or
    test evaluations; the stage), its slowest phase, where it ran and, for a run cut short, the projection."""
    if is_adaptation(metrics, args):
        unit, parts = "iteration", costs([entry for _, entry in iteration_entries(metrics)])
        evaluations = costs([metrics["before"]] if "before" in metrics else [])
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
