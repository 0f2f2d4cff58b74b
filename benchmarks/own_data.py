"""Adapting to one's own crops, measured: synth_b's training images play a folder of someone's own person crops.

1. synth_b's training images are copied under random names into nested folders: no identity or camera in any
   name (the true identity of each copy is kept aside, for step 3 alone);
2. SSG (selftraining.py) adapts a source model to ``folder:COPY`` with run.sh's synthetic profile, rho by the
   paper's rule from ``--images-per-identity`` (synth_b: 17.2), and is tested on synth_b's labelled
   query/gallery (``--test-dir``);
3. SSG++ (semitraining.py) on the same folder stops for a person's labels; this script writes them into the CSV
   from the true identities, as a person would, and the run goes on with ``--labels``;
4. the table: the source model, SSG and SSG++ per iteration, and, when given, the SSG run on the labelled
   target (run.sh's ``ssg/``) beside them.

Each run starts afresh in ``--logs-dir`` (its crops/, ssg/ and ssgpp/ are replaced).

    python -m benchmarks.own_data --source-model logs/synth_a-synth_b/source --labelled-run logs/synth_a-synth_b/ssg
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
from pathlib import Path

import selftraining
import semitraining
from benchmarks.profile import read_profile
from reid.datasets import create
from reid.utils.cli import ArgumentParser, add
from reid.utils.errors import PAUSE_STATUS, UserError
from reid.utils.plots import iteration_entries
from reid.utils.records import METRICS, read_json
from reid.utils.runtime import run_main

ROOT = Path(__file__).resolve().parents[1]


def copy_as_own_crops(items: list, folder: Path, seed: int) -> dict[str, int]:
    """Copy the images of ``items`` under random names into nested folders; returns each copy's path relative
    to ``folder`` with its true identity."""
    rng = random.Random(seed)
    truth = {}
    for fname, pid, _ in items:
        relative = Path(f"cam{rng.randrange(4)}", f"{rng.randrange(1000):03d}",
                        f"{rng.getrandbits(64):016x}{os.path.splitext(fname)[1]}")
        (folder / relative.parent).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fname, folder / relative)
        truth[str(relative)] = pid
    return truth


def fill_labels(template: Path, truth: dict[str, int]) -> None:
    """Write each row's person id as a person who knows the people would."""
    with open(template, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    for row in rows:
        row["person_id"] = f"person {truth[row['file']]}"
    with open(template, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=["index", "file", "person_id"])
        writer.writeheader()
        writer.writerows(rows)


def per_iteration(logs: Path, key: str = "mAP") -> list[float]:
    return [entry[key] for _, entry in iteration_entries(read_json(str(logs / METRICS)))]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    profile = read_profile()
    adapt_options = list(profile["ADAPT"])
    rho = adapt_options.index("--rho")
    del adapt_options[rho:rho + 2]  # rho by the rule instead
    logs = Path(args.logs_dir)
    crops = logs / "crops"
    target = create("synth_b", os.path.join(args.data_dir, "synth_b"), verbose=False)
    for folder in (crops, logs / "ssg", logs / "ssgpp"):  # every run of the benchmark starts afresh
        shutil.rmtree(folder, ignore_errors=True)
    truth = copy_as_own_crops(target.trainval, crops, args.seed)
    print(f"{len(truth)} crops of synth_b under random names in {crops}")
    common = ["--src_dataset", "synth_a", "--tgt_dataset", f"folder:{crops}", "--resume", args.source_model,
              "--data_dir", args.data_dir, "--test-dir", os.path.join(args.data_dir, "synth_b"), "--num-split", "2",
              "--images-per-identity", str(args.images_per_identity), "--seed", str(args.seed),
              *profile["MODEL"], *adapt_options]
    if run_main(selftraining.main, [*common, "--logs_dir", str(logs / "ssg")]) != 0:
        raise UserError(f"selftraining.py failed, see {logs / 'ssg' / 'log.txt'}")
    semi = [*common, *profile["SEMI"], "--logs_dir", str(logs / "ssgpp")]
    status = run_main(semitraining.main, semi)
    if status != PAUSE_STATUS:
        raise UserError(f"semitraining.py did not stop for labels (exit {status}), see {logs / 'ssgpp' / 'log.txt'}")
    template = logs / "ssgpp" / "annotation" / "labels_template.csv"
    fill_labels(template, truth)
    resume = ["--resume-from", str(logs / "ssgpp")] if (logs / "ssgpp" / "checkpoint.pth.tar").exists() else []
    if run_main(semitraining.main, [*semi, "--labels", str(template), *resume]) != 0:
        raise UserError(f"semitraining.py failed, see {logs / 'ssgpp' / 'log.txt'}")
    before = read_json(str(logs / "ssg" / METRICS))["before"]["mAP"]
    rows = [("source model", f"{before:.1f}"), ("SSG on the folder", per_iteration(logs / "ssg")),
            ("SSG++ on the folder, labels from the CSV", per_iteration(logs / "ssgpp"))]
    if args.labelled_run:
        rows.append(("SSG on labelled synth_b (run.sh)", per_iteration(Path(args.labelled_run))))
    print("\ntarget (synth_b query/gallery) mAP per iteration")
    for label, values in rows:
        print(f"  {label:44} {values if isinstance(values, str) else ' '.join(f'{v:.1f}' for v in values)}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    add(parser, "--source-model", required=True, help="the synthetic profile's source model (logs dir or file)")
    add(parser, "--labelled-run", default="", help="an SSG run on labelled synth_b to compare with (its logs dir)")
    add(parser, "--data-dir", default=str(ROOT / "data"))
    add(parser, "--logs-dir", default=str(ROOT / "logs" / "own_data"))
    add(parser, "--images-per-identity", type=float, default=17.2, help="synth_b's: 1,376 images of 80 people")
    add(parser, "--seed", type=int, default=1)
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
