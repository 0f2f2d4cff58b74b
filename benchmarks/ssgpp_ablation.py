"""Where SSG++'s gain over SSG comes from: an ablation on the synthetic pair (synth_a -> synth_b).

Every variant adapts one source model with run.sh's demo profile (profiles/synthetic.sh), once per seed:

    ssg               selftraining.py
    ssg_step_lr       SSG with SSG++'s step learning rate (semitraining.py with no labelled set ever drawn)
    ssgpp_label0      SSG++ with the labelled set drawn at iteration 0
    ssgpp             SSG++ as run.sh runs it (labelled set drawn at the profile's --label-iteration)
    ssgpp_schedule30  SSG++ adding |U| // 30 propagated labels per iteration whatever the run's length
    labelled_only     SSG++'s labelled loss on the labelled set alone: no propagation
    true_propagation  SSG++ with the selected images' ground-truth identities: the propagation's ceiling
    oracle            every target image with its true identity in both of SSG++'s loaders, the same loss and
                      schedule from iteration 0: the ceiling of all

The variants that are not options of the scripts are composed from the package's pieces (AdaptationRun,
semitraining.train with its grouping step, reid.propagation.SemiSupervision). Each run writes its records under
``<logs-dir>/<variant>/seed<k>``; a finished run is skipped and an interrupted one resumes, so a crash costs
one run. The table gives the mean over seeds of mAP and top-1 per iteration, each seed's last mAP and the
propagated labels (count and accuracy); it is also written to ``<logs-dir>/ablation.md`` and ``results.json``.

    python -m benchmarks.ssgpp_ablation --seeds 1 2
    python -m benchmarks.ssgpp_ablation --source-model logs/synth_a-synth_b/source --variants ssg ssgpp
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import selftraining
import semitraining
import source_train
from benchmarks.profile import option_value, read_profile
from reid.adaptation import AdaptationRun
from reid.grouping import Grouping
from reid.paper import ADAPTATION
from reid.propagation import LabelledSelection, SemiSupervision
from reid.utils.errors import UserError
from reid.utils.osutils import write_atomically
from reid.utils.plots import iteration_entries
from reid.utils.records import BEST_MODEL, CHECKPOINT, METRICS, read_json, write_json
from reid.utils.runtime import run_main
from selftraining import self_similarity_grouping

ROOT = Path(__file__).resolve().parents[1]
PAIR = ("synth_a", "synth_b")
INTERRUPTED = 130  # run_main's status after Ctrl-C


class Selected:
    """SSG++'s selection passed through ``change`` (a variant of what the labelled loader holds)."""

    def __init__(self, supervision: SemiSupervision, change: Callable[[LabelledSelection], LabelledSelection]):
        self.supervision = supervision
        self.change = change

    def select(self, *args) -> LabelledSelection | None:
        selection = self.supervision.select(*args)
        return None if selection is None else self.change(selection)


def labelled_only(selection: LabelledSelection) -> LabelledSelection:
    first = slice(0, selection.num_labelled)
    return dataclasses.replace(selection, indices=selection.indices[first], labels=selection.labels[first],
                               true_ids=selection.true_ids[first])


def true_labels(selection: LabelledSelection) -> LabelledSelection:
    return dataclasses.replace(selection, labels=selection.true_ids)


def true_grouping(run: AdaptationRun) -> tuple[Grouping, None]:
    """The target grouped by its true identities: every image kept, its identity in every feature type."""
    true_ids = np.array([pid for _, pid, _ in run.target.trainval])
    return Grouping(np.repeat(true_ids[:, None], run.args.num_split + 1, axis=1), eps=[]), None


class EveryImage:
    """The oracle's labelled loader: every target image with its true identity, from iteration 0."""

    def __init__(self, supervision: SemiSupervision):
        self.true_ids = supervision.true_ids

    def select(self, iteration: int, *_) -> LabelledSelection:
        everything = np.arange(len(self.true_ids))
        return LabelledSelection(everything, self.true_ids, len(everything), self.true_ids)


def semi_variant(group: semitraining.GroupingStep = self_similarity_grouping, wrap: Callable | None = None,
                 iterations: int | None = None) -> Callable[[list[str]], None]:
    """A main() for semitraining.py's loop with another grouping step or labelled selection."""
    def main(argv: list[str]) -> None:
        run = AdaptationRun(semitraining.parse_args(argv))
        supervision = semitraining.semi_supervision(run)
        supervision.iterations = iterations or supervision.iterations
        semitraining.train(run, wrap(supervision) if wrap else supervision, group)
    return main


@dataclasses.dataclass(frozen=True)
class Variant:
    description: str
    main: Callable[[list[str]], None]
    options: Callable[[dict[str, list[str]]], list[str]]  # added to the profile's ADAPT options


def _semi(profile: dict[str, list[str]]) -> list[str]:
    return profile["SEMI"]


def _label_iteration(iteration: int | str) -> Callable[[dict[str, list[str]]], list[str]]:
    def options(profile: dict[str, list[str]]) -> list[str]:
        value = int(option_value(profile["ADAPT"], "--iteration")) if iteration == "never" else iteration
        return [*profile["SEMI"], "--label-iteration", str(value)]
    return options


VARIANTS = {
    "ssg": Variant("SSG", selftraining.main, lambda profile: []),
    "ssg_step_lr": Variant("SSG, SSG++'s step lr", semitraining.main, _label_iteration("never")),
    "ssgpp_label0": Variant("SSG++, labels at iteration 0", semitraining.main, _label_iteration(0)),
    "ssgpp": Variant("SSG++ (run.sh)", semitraining.main, _semi),
    "ssgpp_schedule30": Variant("SSG++, U // 30 per iteration",
                                semi_variant(iterations=ADAPTATION.iterations), _semi),
    "labelled_only": Variant("SSG++, no propagation", semi_variant(wrap=lambda s: Selected(s, labelled_only)),
                             _semi),
    "true_propagation": Variant("SSG++, true labels propagated",
                                semi_variant(wrap=lambda s: Selected(s, true_labels)), _semi),
    "oracle": Variant("oracle: true identities", semi_variant(true_grouping, EveryImage), _label_iteration(0)),
}


def source_model(args: argparse.Namespace, profile: dict[str, list[str]]) -> str:
    """``--source-model``, or the profile's source model trained once under the logs dir."""
    if args.source_model:
        return args.source_model
    logs = os.path.join(args.logs_dir, "source")
    if not os.path.exists(os.path.join(logs, BEST_MODEL)):
        argv = ["--dataset", PAIR[0], "--test-datasets", PAIR[1], "--data_dir", args.data_dir, "--logs_dir", logs,
                *profile["MODEL"], *profile["SOURCE"]]
        if run_main(source_train.main, argv) != 0:
            raise UserError(f"source training failed, see {logs}/log.txt")
    return logs


def run_argv(variant: Variant, seed: int, source: str, args: argparse.Namespace, profile: dict[str, list[str]],
             logs: str) -> list[str]:
    argv = ["--src_dataset", PAIR[0], "--tgt_dataset", PAIR[1], "--resume", source, "--data_dir", args.data_dir,
            "--logs_dir", logs, "--num-split", "2", "--seed", str(seed), *profile["MODEL"], *profile["ADAPT"],
            *variant.options(profile)]
    if os.path.exists(os.path.join(logs, CHECKPOINT)):  # interrupted: continue where it stopped
        argv += ["--resume-from", logs]
    return argv


def finished(logs: str, iterations: int) -> bool:
    fpath = os.path.join(logs, METRICS)
    return os.path.exists(fpath) and f"iteration_{iterations - 1}" in read_json(fpath)


def run_all(args: argparse.Namespace, profile: dict[str, list[str]],
            variants: dict[str, Variant] = VARIANTS) -> dict[str, float]:
    """Runs every (variant, seed) of ``args`` not finished yet; returns the wall time of those it ran."""
    iterations = int(option_value(profile["ADAPT"], "--iteration"))
    source = source_model(args, profile)
    seconds = {}
    for seed in args.seeds:  # seed-major: the first seed of every variant gives a first table early
        for variant in args.variants:
            logs = os.path.join(args.logs_dir, variant, f"seed{seed}")
            if finished(logs, iterations):
                continue
            print(f"=== {variant}, seed {seed} ===", flush=True)
            start = time.time()
            argv = run_argv(variants[variant], seed, source, args, profile, logs)
            saved, sys.argv = sys.argv, [f"ssgpp_ablation:{variant}", *argv]  # the run's log.txt shows its options
            try:
                status = run_main(variants[variant].main, argv)
            finally:
                sys.argv = saved
            if status == INTERRUPTED:
                raise KeyboardInterrupt
            if status != 0:
                print(f"{variant} seed {seed} failed, see {logs}/log.txt", file=sys.stderr)
                continue
            seconds[f"{variant}/seed{seed}"] = time.time() - start
    return seconds


def collect(args: argparse.Namespace) -> dict[str, dict]:
    """Per variant: the finished seeds' iteration records."""
    results = {}
    for variant in args.variants:
        runs = {}
        for seed in args.seeds:
            fpath = os.path.join(args.logs_dir, variant, f"seed{seed}", METRICS)
            if os.path.exists(fpath):
                metrics = read_json(fpath)
                runs[seed] = {"before": metrics.get("before"),
                              "iterations": [entry for _, entry in iteration_entries(metrics)]}
        results[variant] = runs
    return results


def mean_series(runs: dict, key: str) -> list[float | None]:
    length = min(len(run["iterations"]) for run in runs.values())
    series = []
    for k in range(length):
        values = [run["iterations"][k].get(key) for run in runs.values()]
        values = [v for v in values if v is not None]
        series.append(float(np.mean(values)) if values else None)
    return series


def series_text(values: list[float | None], number: str = "{:.1f}") -> str:
    """Values side by side, ``-`` where one is missing."""
    return " ".join("-" if v is None else number.format(v) for v in values)


def format_table(results: dict[str, dict], variants: dict[str, Variant] = VARIANTS) -> str:
    """One markdown row per variant: means over seeds per iteration, each seed's last mAP, the propagation."""
    lines = ["| variant | seeds | mAP per iteration | top-1 per iteration | last mAP per seed | mean last mAP "
             "| propagated labels per iteration (% correct) |", "| --- | --- | --- | --- | --- | ---: | --- |"]
    for variant, runs in results.items():
        if not runs:
            continue
        last = [run["iterations"][-1]["mAP"] for run in runs.values() if run["iterations"]]
        propagated = [f"{n:.0f} ({a:.0f}%)" if a is not None else "-"
                      for n, a in zip(mean_series(runs, "propagated"), mean_series(runs, "propagated_accuracy"))
                      if n is not None]
        cells = [variants[variant].description, ", ".join(map(str, runs)), series_text(mean_series(runs, "mAP")),
                 series_text(mean_series(runs, "top1")), series_text(last), f"{np.mean(last):.1f}",
                 " ".join(propagated) or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    before = next((run["before"] for runs in results.values() for run in runs.values() if run.get("before")), None)
    if before:
        lines.append(f"\nbefore adaptation: mAP {before['mAP']:.1f}, top-1 {before['top1']:.1f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None, variants: dict[str, Variant] = VARIANTS,
               logs_name: str = "ssgpp_ablation", description: str = __doc__) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", "--data_dir", default=str(ROOT / "data"))
    parser.add_argument("--logs-dir", "--logs_dir", default=str(ROOT / "logs" / logs_name))
    parser.add_argument("--source-model", "--source_model", default="",
                        help="source checkpoint or logs dir (default: train one with run.sh's synthetic profile)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(variants), default=list(variants))
    parser.add_argument("--table-only", "--table_only", action="store_true", help="print the table of finished runs")
    return parser.parse_args(argv)


def run_study(args: argparse.Namespace, variants: dict[str, Variant] = VARIANTS,
              table_of: Callable[[dict[str, dict], dict[str, Variant]], str] = format_table) -> None:
    """Run the variants not finished yet, print their table and write it with the records under the logs dir."""
    seconds = {} if args.table_only else run_all(args, read_profile(), variants)
    results = collect(args)
    table = table_of(results, variants)
    print(table)
    os.makedirs(args.logs_dir, exist_ok=True)
    write_atomically(os.path.join(args.logs_dir, "ablation.md"), lambda tmp: Path(tmp).write_text(table + "\n"))
    fpath = os.path.join(args.logs_dir, "results.json")
    record = read_json(fpath) if os.path.exists(fpath) else {}
    record.update(results=results, seconds={**record.get("seconds", {}), **seconds})
    write_json(fpath, record)


def main(argv: list[str] | None = None) -> None:
    run_study(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
