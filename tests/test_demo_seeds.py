"""benchmarks/demo_seeds.py and benchmarks/ssg_study.py: what they read from runs and how they judge them."""
import json

from benchmarks import ssg_study
from benchmarks.demo_seeds import format_table, read_seed, targets_met
from benchmarks.profile import option_value, read_profile


def write_run(logs, before, ssg, ssgpp):
    for stage, metrics in (("source", {"selected_epoch": 9, "test_synth_a": {"mAP": 91.5}}),
                           ("ssg", {"before": {"mAP": before}, **{f"iteration_{k}": {"mAP": v}
                                                                  for k, v in enumerate(ssg)}}),
                           ("ssgpp", {"before": {"mAP": before}, **{f"iteration_{k}": {"mAP": v}
                                                                    for k, v in enumerate(ssgpp)}})):
        (logs / stage).mkdir(parents=True)
        (logs / stage / "metrics.json").write_text(json.dumps(metrics))


def test_a_seed_meets_the_targets_only_with_a_rising_ssg_and_a_higher_ssgpp(tmp_path):
    write_run(tmp_path / "good", 30.0, [35.0, 38.0, 40.0], [35.0, 45.0, 43.0])
    write_run(tmp_path / "falling", 30.0, [41.0, 39.0, 38.5], [41.0, 50.0, 41.0])
    good, falling = read_seed(tmp_path / "good"), read_seed(tmp_path / "falling")
    assert good == {"selected_epoch": 9, "source_mAP": 91.5, "before": 30.0, "ssg": [35.0, 38.0, 40.0],
                    "ssgpp": [35.0, 45.0, 43.0]}
    assert all(targets_met(good).values())
    assert list(targets_met(falling).values()) == [True, False, False]  # +8.5; below its first; only +2.5
    table = format_table({1: good, 2: falling}, {1: 8.5})
    rows = table.splitlines()
    assert rows[2] == "| 1 | 9 (91.5) | 30.0 | 35.0 38.0 40.0 | 35.0 45.0 43.0 | +10.0 | +3.0 | 8.5 | all met |"
    assert rows[3] == ("| 2 | 9 (91.5) | 30.0 | 41.0 39.0 38.5 | 41.0 50.0 41.0 | +8.5 | +2.5 | - "
                       "| MISSED: SSG last >= SSG first; SSG++ last >= SSG last + 3 |")
    assert "SSG last - before: mean 9.2, std 0.8, range 8.5 .. 10.0" in table


def test_an_unfinished_run_is_not_read(tmp_path):
    write_run(tmp_path, 30.0, [35.0], [])
    assert read_seed(tmp_path) is None


def test_the_study_scales_one_option_of_the_profile():
    profile = read_profile()
    options = {name: variant.options(profile) for name, variant in ssg_study.VARIANTS.items()}
    rho, lr, epochs = (float(option_value(profile["ADAPT"], name)) for name in ("--rho", "--lr", "--epochs"))
    assert options["profile"] == []
    assert float(options["rho_x0.25"][1]) == float(f"{rho / 4:.3g}") and options["rho_x2"][0] == "--rho"
    assert float(options["lr_x3"][1]) == float(f"{lr * 3:.3g}")
    assert options["epochs_x2"] == ["--epochs", str(round(2 * epochs))]


def test_the_study_table_names_a_variant_that_finished_no_iteration():
    entry = {"mAP": 40.0, "clusters_global": 70, "images_kept": 1100, "pair_precision": 40.0, "pair_recall": 60.0}
    results = {"profile": {1: {"before": {"mAP": 30.0, "top1": 40.0}, "iterations": [entry, {**entry, "mAP": 44.0}]}},
               "rho_x2": {1: {"before": {"mAP": 30.0, "top1": 40.0}, "iterations": []}}}
    rows = ssg_study.format_table(results).splitlines()
    assert rows[2].startswith("| SSG, run.sh's profile | - | 40.0 44.0 | 44.0 | 44.0 | 70 70 | 1100 1100 | 40 40 |")
    assert rows[3].startswith("| rho x 2 | --rho 0.03 | no iteration finished (see its log.txt) |")
    assert rows[3].count("|") == rows[2].count("|")
