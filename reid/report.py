"""Print the target mAP / top-1 table of a run.sh pipeline: before adaptation, after SSG, after SSG++.

    python -m reid.report logs/synth_a-synth_b
"""
from __future__ import annotations

import argparse
import os

from reid.utils.logging import read_json
from reid.utils.plots import iteration_entries


def last_iteration(metrics: dict) -> dict | None:
    iterations = iteration_entries(metrics)
    return iterations[-1][1] if iterations else None


def rows(logs_dir: str) -> list[tuple[str, dict | None]]:
    def load(stage: str) -> dict:
        fpath = os.path.join(logs_dir, stage, "metrics.json")
        return read_json(fpath) if os.path.exists(fpath) else {}

    ssg, semi = load("ssg"), load("ssgpp")
    return [("before adaptation", ssg.get("before")), ("SSG", last_iteration(ssg)),
            ("SSG++", last_iteration(semi))]


def format_table(table: list[tuple[str, dict | None]]) -> str:
    lines = [f"{'target':<20}{'mAP':>8}{'top-1':>8}", "-" * 36]
    for name, metrics in table:
        if metrics:
            lines.append(f"{name:<20}{metrics['mAP']:>8.1f}{metrics['top1']:>8.1f}")
        else:
            lines.append(f"{name:<20}{'-':>8}{'-':>8}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs_dir")
    print(format_table(rows(parser.parse_args().logs_dir)))


if __name__ == "__main__":
    main()
