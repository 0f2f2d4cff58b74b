"""Why SSG climbs or falls on the synthetic pair (synth_a -> synth_b): SSG alone, one option of run.sh's profile
changed at a time, from one source model, once per seed.

    profile       selftraining.py with run.sh's synthetic profile (rho by the rule stated there)
    rho_x0.25     rho at a quarter of the profile's (about the profile's value before the rule)
    rho_x0.5      rho at half the profile's
    rho_x2        rho at twice the profile's
    lr_x0.3       a third of the profile's learning rate
    lr_x3         three times the profile's learning rate
    epochs_x2     twice the profile's epochs per iteration

Besides the target mAP per iteration the table shows what the grouping made of the target: the global
clusters (the target has 80 identities), the images kept, and the pairs of images that share a global cluster
measured against the true identities (precision: the share of those pairs that show one person; recall: the
share of one person's pairs that share a cluster). The algorithm never sees those identities. Runs are
stored, skipped when finished and resumed when interrupted, as in ``benchmarks.ssgpp_ablation``.

    python -m benchmarks.ssg_study --source-model logs/synth_a-synth_b/source --seeds 1 2
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

import selftraining
from benchmarks.profile import option_value, read_profile
from benchmarks.ssgpp_ablation import Variant, mean_series, parse_args, run_study, series_text
from reid.utils.runtime import run_main


def _scaled(option: str, factor: float) -> Callable[[dict[str, list[str]]], list[str]]:
    """Options that set ``option`` to ``factor`` times the profile's value of it (its ADAPT options)."""
    def options(profile: dict[str, list[str]]) -> list[str]:
        scaled = float(option_value(profile["ADAPT"], option)) * factor
        return [option, str(round(scaled)) if option == "--epochs" else f"{scaled:.3g}"]
    return options


VARIANTS = {
    "profile": Variant("SSG, run.sh's profile", selftraining.main, lambda profile: []),
    "rho_x0.25": Variant("rho x 0.25", selftraining.main, _scaled("--rho", 0.25)),
    "rho_x0.5": Variant("rho x 0.5", selftraining.main, _scaled("--rho", 0.5)),
    "rho_x2": Variant("rho x 2", selftraining.main, _scaled("--rho", 2)),
    "lr_x0.3": Variant("lr x 0.3", selftraining.main, _scaled("--lr", 1 / 3)),
    "lr_x3": Variant("lr x 3", selftraining.main, _scaled("--lr", 3)),
    "epochs_x2": Variant("epochs per iteration x 2", selftraining.main, _scaled("--epochs", 2)),
}


def format_table(results: dict[str, dict], variants: dict[str, Variant] = VARIANTS) -> str:
    """One markdown row per variant: means over seeds per iteration of mAP and of what the grouping made."""
    header = ["variant", "options", "mAP per iteration", "last mAP per seed", "mean last mAP", "global clusters",
              "images kept", "pair precision", "pair recall"]
    lines = ["| " + " | ".join(header) + " |", "| --- | --- | --- | --- | ---: | --- | --- | --- | --- |"]
    profile = read_profile()
    for variant, runs in results.items():
        if not runs:
            continue
        last = [run["iterations"][-1]["mAP"] for run in runs.values() if run["iterations"]]
        options = " ".join(variants[variant].options(profile)) or "-"
        if not last:  # e.g. a grouping with too few clusters for a batch: the run's log.txt says why
            lines.append(f"| {variants[variant].description} | {options} | no iteration finished (see its log.txt) "
                         "| | | | | | |")
            continue
        cells = [variants[variant].description, options,
                 series_text(mean_series(runs, "mAP")), series_text(last), f"{np.mean(last):.1f}",
                 series_text(mean_series(runs, "clusters_global"), "{:.0f}"),
                 series_text(mean_series(runs, "images_kept"), "{:.0f}"),
                 series_text(mean_series(runs, "pair_precision"), "{:.0f}"),
                 series_text(mean_series(runs, "pair_recall"), "{:.0f}")]
        lines.append("| " + " | ".join(cells) + " |")
    before = next((run["before"] for runs in results.values() for run in runs.values() if run.get("before")), None)
    if before:
        lines.append(f"\nbefore adaptation: mAP {before['mAP']:.1f}, top-1 {before['top1']:.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv, VARIANTS, logs_name="ssg_study", description=__doc__)
    run_study(args, VARIANTS, format_table)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
