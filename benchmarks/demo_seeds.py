"""The demo's two claims on every seed: run.sh's synthetic profile end to end (source training, SSG, SSG++,
report), once per seed, on this machine's CPU kernels or on another kernel set.

    python -m benchmarks.demo_seeds --seeds 1 2 3
    python -m benchmarks.demo_seeds --seeds 1 --cpu-capability avx2   # other kernels round differently

Per seed: the selected source epoch and the source model's own test mAP, the target mAP before adaptation,
SSG's and SSG++'s target mAP per iteration and the run's minutes; then the mean, the standard deviation and the
range over the seeds. The targets, met on every seed: SSG's last mAP >= before adaptation + 8 and >= its first
iteration's (a rising curve, as in the paper), SSG++'s last >= SSG's last + 3. Each run is run.sh itself with
``SEED`` and ``LOGS_DIR`` set (``ATEN_CPU_CAPABILITY`` too with ``--cpu-capability``), logged to
``<logs-dir>/<kernels>/seed<N>/run.log``; a finished seed is read, not rerun. The table is also written to
``<logs-dir>/<kernels>/seeds.md`` and the records to ``results.json`` there.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from reid.utils.errors import UserError
from reid.utils.osutils import write_atomically
from reid.utils.plots import iteration_entries
from reid.utils.records import read_json, write_json
from reid.utils.runtime import run_main

ROOT = Path(__file__).resolve().parents[1]
SSG_GAIN_OVER_BEFORE = 8.0
SSGPP_GAIN_OVER_SSG = 3.0


def run_seed(seed: int, logs: Path, args: argparse.Namespace) -> float:
    """run.sh for ``seed`` into ``logs``; returns its wall-clock seconds."""
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SEED": str(seed), "LOGS_DIR": str(logs), "DATA_DIR": args.data_dir,
           "PYTHON": sys.executable}
    if args.cpu_capability:
        env["ATEN_CPU_CAPABILITY"] = args.cpu_capability
    print(f"=== seed {seed}: ./run.sh > {logs / 'run.log'}", flush=True)
    start = time.time()
    with open(logs / "run.log", "w") as log:
        status = subprocess.run(["bash", str(ROOT / "run.sh")], env=env, stdout=log, stderr=subprocess.STDOUT)
    if status.returncode != 0:
        raise UserError(f"run.sh failed for seed {seed} (exit {status.returncode}), see {logs / 'run.log'}")
    return time.time() - start


def read_seed(logs: Path) -> dict | None:
    """The figures of one finished run.sh logs dir, None when a stage is missing."""
    stages = {name: logs / name / "metrics.json" for name in ("source", "ssg", "ssgpp")}
    if not all(path.exists() for path in stages.values()):
        return None
    source, ssg, ssgpp = (read_json(str(path)) for path in stages.values())
    if not iteration_entries(ssg) or not iteration_entries(ssgpp):
        return None
    return {"selected_epoch": source.get("selected_epoch"), "source_mAP": source.get("test_synth_a", {}).get("mAP"),
            "before": ssg["before"]["mAP"], "ssg": [entry["mAP"] for _, entry in iteration_entries(ssg)],
            "ssgpp": [entry["mAP"] for _, entry in iteration_entries(ssgpp)]}


def targets_met(record: dict) -> dict[str, bool]:
    ssg_last, ssgpp_last = record["ssg"][-1], record["ssgpp"][-1]
    return {f"SSG last >= before + {SSG_GAIN_OVER_BEFORE:g}": ssg_last >= record["before"] + SSG_GAIN_OVER_BEFORE,
            "SSG last >= SSG first": ssg_last >= record["ssg"][0],
            f"SSG++ last >= SSG last + {SSGPP_GAIN_OVER_SSG:g}": ssgpp_last >= ssg_last + SSGPP_GAIN_OVER_SSG}


def format_table(records: dict[int, dict], minutes: dict[int, float]) -> str:
    """One markdown row per seed, then the mean, standard deviation and range of the summary columns."""
    lines = ["| seed | source epoch (own test mAP) | before | SSG mAP per iteration | SSG++ mAP per iteration "
             "| SSG last - before | SSG++ last - SSG last | minutes | targets |",
             "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | --- |"]
    columns: dict[str, list[float]] = {"before": [], "SSG last": [], "SSG++ last": [], "SSG last - before": [],
                                       "SSG++ last - SSG last": []}
    for seed, record in records.items():
        ssg_gain, ssgpp_gain = record["ssg"][-1] - record["before"], record["ssgpp"][-1] - record["ssg"][-1]
        for name, value in zip(columns, (record["before"], record["ssg"][-1], record["ssgpp"][-1], ssg_gain,
                                         ssgpp_gain)):
            columns[name].append(value)
        met = targets_met(record)
        verdict = "all met" if all(met.values()) else "MISSED: " + "; ".join(k for k, ok in met.items() if not ok)
        source = f"{record['selected_epoch']} ({record['source_mAP']:.1f})" if record["source_mAP"] else "-"
        minute = f"{minutes[seed]:.1f}" if seed in minutes else "-"
        lines.append(f"| {seed} | {source} | {record['before']:.1f} | {_series(record['ssg'])} | "
                     f"{_series(record['ssgpp'])} | {ssg_gain:+.1f} | {ssgpp_gain:+.1f} | {minute} | {verdict} |")
    lines.append("")
    for name, values in columns.items():
        lines.append(f"{name}: mean {np.mean(values):.1f}, std {np.std(values):.1f}, "
                     f"range {min(values):.1f} .. {max(values):.1f}")
    return "\n".join(lines)


def _series(values: list[float]) -> str:
    return " ".join(f"{value:.1f}" for value in values)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--cpu-capability", "--cpu_capability", default="", choices=["", "default", "avx2", "avx512"],
                        help="run under ATEN_CPU_CAPABILITY=... (PyTorch's kernels for another CPU)")
    parser.add_argument("--data-dir", "--data_dir", default=str(ROOT / "data"))
    parser.add_argument("--logs-dir", "--logs_dir", default=str(ROOT / "logs" / "demo_seeds"))
    parser.add_argument("--table-only", "--table_only", action="store_true", help="print the table of finished seeds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    kernels = Path(args.logs_dir) / (args.cpu_capability or "native")
    results_path = kernels / "results.json"
    results = read_json(str(results_path)) if results_path.exists() else {"minutes": {}}
    records = {}
    for seed in args.seeds:
        logs = kernels / f"seed{seed}"
        if read_seed(logs) is None and not args.table_only:
            results["minutes"][str(seed)] = run_seed(seed, logs, args) / 60
        record = read_seed(logs)
        if record is not None:
            records[seed] = record
    if not records:
        raise UserError(f"{kernels}: no finished seed to report")
    minutes = {int(seed): value for seed, value in results["minutes"].items()}
    table = format_table(records, minutes)
    print(f"run.sh's synthetic profile, kernels: {args.cpu_capability or 'native'}\n{table}")
    results["records"] = {str(seed): record for seed, record in records.items()}
    write_json(str(results_path), results)
    write_atomically(str(kernels / "seeds.md"), lambda tmp: Path(tmp).write_text(table + "\n"))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
