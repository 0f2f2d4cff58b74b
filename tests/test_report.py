"""python -m reid.report on hand-made logs: before / last / best rows, the published rows and the differences."""
import json

import pytest
from PIL import Image

from reid.paper import PUBLISHED, PUBLISHED_SOURCE
from reid.report import BEST_LABEL, best_iteration, main
from reid.utils import plots
from reid.utils.plots import StageCurve
from reid.utils.records import read_json
from reid.utils.runtime import run_main


def entry(m_ap, top1, **extra):
    return {"mAP": m_ap, "top1": top1, "top5": top1 + 10, "top10": top1 + 15, **extra}


def write_stage(folder, metrics, **args):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "args.json").write_text(json.dumps(args))


def table_row(output, label):
    """The cells of the row whose label is ``label``."""
    line = next(line for line in output.splitlines() if line.startswith(label + " "))
    return line[len(label):].split()


SSG_METRICS = {
    "before": entry(19.1, 46.8),
    # top-1 35.0 first at iteration 1: a later equal top-1 does not replace it (strictly better, as released).
    **{f"iteration_{k}": entry(m_ap, top1) for k, (m_ap, top1) in
       enumerate([(20.0, 44.0), (57.0, 81.5), (56.0, 80.0), (59.9, 81.5), (58.5, 79.5)])},
}


def test_best_is_the_first_iteration_of_the_highest_top1_above_the_source_model():
    assert best_iteration(SSG_METRICS)[0] == 1
    assert best_iteration({"before": entry(30, 50), "iteration_0": entry(31, 49.9)}) == (None, None)


def test_adaptation_stage_prints_before_last_best_and_the_published_rows(tmp_path, capsys):
    write_stage(tmp_path, SSG_METRICS, src_dataset="dukemtmc", tgt_dataset="market1501")
    assert run_main(main, [str(tmp_path)]) == 0
    output = capsys.readouterr().out
    assert "SSG: dukemtmc -> market1501" in output
    assert table_row(output, "before adaptation") == ["-", "19.1", "46.8", "56.8", "61.8"]
    assert table_row(output, "last") == ["4", "58.5", "79.5", "89.5", "94.5"]
    assert table_row(output, BEST_LABEL) == ["1", "57.0", "81.5", "91.5", "96.5"]
    assert table_row(output, "published before adaptation") == ["-", "26.6", "54.6", "-", "-"]
    assert table_row(output, "published SSG") == ["-", "58.3", "80.0", "90.0", "92.4"]
    assert table_row(output, "before adaptation - published") == ["-", "-7.5", "-7.8", "-", "-"]
    assert table_row(output, "last - published") == ["4", "+0.2", "-0.5", "-0.5", "+2.1"]
    assert table_row(output, "best - published") == ["1", "-1.3", "+1.5", "+1.5", "+4.1"]


def test_run_sh_logs_report_every_stage_beside_the_readmes_table(tmp_path, capsys):
    write_stage(tmp_path / "source", {"epochs": [], "selected_epoch": 41, "test_market1501": entry(78.0, 91.0),
                                      "test_dukemtmc": entry(19.0, 46.0)}, dataset="market1501")
    write_stage(tmp_path / "ssg", SSG_METRICS, src_dataset="market1501", tgt_dataset="dukemtmc")
    semi = {"before": entry(19.1, 46.8), "iteration_0": entry(61.0, 80.0, labelled=700)}
    write_stage(tmp_path / "ssgpp", semi, src_dataset="market1501", tgt_dataset="dukemtmc", label_iteration=5)
    assert run_main(main, [str(tmp_path)]) == 0
    output = capsys.readouterr().out
    source, ssg, ssgpp = output.split("\n\n")
    assert "selected on validation top-1" in source
    assert table_row(source, "test on market1501") == ["41", "78.0", "91.0", "101.0", "106.0"]
    assert table_row(source, "published source only") == ["-", "80.8", "92.5", "-", "-"]
    assert table_row(source, "test on market1501 - published") == ["41", "-2.8", "-1.5", "-", "-"]
    assert "test on dukemtmc - published" not in source  # the README has no cross-domain source-only row
    assert table_row(ssg, "published before adaptation") == ["-", "16.1", "30.5", "-", "-"]
    assert table_row(ssg, "published SSG") == ["-", "53.4", "73.0", "-", "83.2"]
    assert ssgpp.startswith("SSG++: market1501 -> dukemtmc")
    assert table_row(ssgpp, "published SSG++") == ["-", "60.3", "76.0", "-", "-"]
    assert table_row(ssgpp, "best - published") == ["0", "+0.7", "+4.0", "-", "-"]
    assert table_row(ssgpp, "before adaptation - published") == ["-", "+3.0", "+16.3", "-", "-"]


@pytest.mark.parametrize(("source", "target", "before", "ssg", "ssgpp"), [
    ("market1501", "dukemtmc", (16.1, 30.5), (53.4, 73.0), (60.3, 76.0)),
    ("dukemtmc", "market1501", (26.6, 54.6), (58.3, 80.0), (68.7, 86.2)),
    ("market1501", "msmt17", (2.7, 8.6), (13.2, 31.6), (16.6, 37.6)),
    ("dukemtmc", "msmt17", (3.82, 12.38), (13.3, 32.2), (18.3, 41.6)),
])
def test_the_published_table_is_the_ssg_readmes(source, target, before, ssg, ssgpp):
    for stage, (m_ap, top1) in (("before", before), ("SSG", ssg), ("SSG++", ssgpp)):
        published = PUBLISHED[(stage, source, target)]
        assert (published["mAP"], published["top1"]) == (m_ap, top1)
    assert {(dataset, row["top1"], row["mAP"]) for dataset, row in PUBLISHED_SOURCE.items()} == {
        ("dukemtmc", 82.6, 70.5), ("market1501", 92.5, 80.8), ("msmt17", 73.6, 48.6)}


def test_a_synthetic_pair_has_no_paper_row_and_rerank_columns_appear(tmp_path, capsys):
    metrics = {"before": entry(27.5, 30.8, mAP_rerank=33.0, top1_rerank=35.0, top5_rerank=50.0, top10_rerank=60.0),
               "iteration_0": entry(36.8, 43.3, mAP_rerank=40.1, top1_rerank=45.5, top5_rerank=60.0,
                                    top10_rerank=70.0)}
    write_stage(tmp_path, metrics, src_dataset="synth_a", tgt_dataset="synth_b")
    assert run_main(main, [str(tmp_path)]) == 0
    output = capsys.readouterr().out
    assert "published" not in output and "rr mAP" in output
    assert table_row(output, "last") == ["0", "36.8", "43.3", "53.3", "58.3", "40.1", "45.5", "60.0", "70.0"]


@pytest.mark.parametrize("content", [None, "empty stage folder"])
def test_a_folder_without_metrics_is_one_line(tmp_path, capsys, content):
    if content:
        (tmp_path / "ssg").mkdir()
    assert run_main(main, [str(tmp_path)]) == 2
    assert "no metrics.json there" in capsys.readouterr().err


def test_report_draws_both_stages_against_the_before_line_and_the_papers_marks(tmp_path, capsys):
    write_stage(tmp_path / "ssg", SSG_METRICS, src_dataset="dukemtmc", tgt_dataset="market1501", seed=1)
    semi = {"before": entry(19.1, 46.8), **{f"iteration_{k}": entry(30.0 + 10 * k, 60.0) for k in range(5)}}
    write_stage(tmp_path / "ssgpp", semi, src_dataset="dukemtmc", tgt_dataset="market1501", label_iteration=5)
    assert run_main(main, [str(tmp_path)]) == 0
    assert f"figure: {tmp_path / 'report.png'}" in capsys.readouterr().out
    with Image.open(tmp_path / "report.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > 300

    stages = [StageCurve("SSG", SSG_METRICS, 58.3), StageCurve("SSG++", semi, 68.7, label_iteration=2)]
    lines = {line.get_label(): line for line in plots._report_figure(
        plots._agg_figure_factory()(), stages, "title").axes[0].get_lines()}
    assert list(lines["SSG (last 58.5)"].get_ydata()) == [20.0, 57.0, 56.0, 59.9, 58.5]
    assert list(lines["SSG++ (last 70.0)"].get_xdata()) == [0, 1, 2, 3, 4]
    assert list(lines["before adaptation (19.1)"].get_ydata()) == [19.1, 19.1]
    assert (list(lines["SSG, published (58.3)"].get_xdata()), list(lines["SSG++, published (68.7)"].get_ydata())) == \
        ([4], [68.7])
    assert list(lines["SSG++: labelled set drawn"].get_xdata()) == [2, 2]


def test_a_synthetic_pair_gets_a_figure_without_paper_marks_and_a_source_stage_none(tmp_path, capsys):
    write_stage(tmp_path / "source", {"epochs": [], "selected_epoch": 3, "test_synth_a": entry(90.0, 92.0)},
                dataset="synth_a")
    assert run_main(main, [str(tmp_path / "source")]) == 0
    assert not (tmp_path / "source" / "report.png").exists()
    write_stage(tmp_path / "ssg", {"before": entry(30.0, 40.0), "iteration_0": entry(35.0, 45.0)},
                src_dataset="synth_a", tgt_dataset="synth_b", seed=2)
    assert run_main(main, [str(tmp_path)]) == 0
    assert "SSG: synth_a -> synth_b, seed 2" in capsys.readouterr().out
    figure = plots._report_figure(plots._agg_figure_factory()(), [StageCurve("SSG", read_json(
        str(tmp_path / "ssg" / "metrics.json")))], "title")
    assert [line.get_label() for line in figure.axes[0].get_lines()] == ["before adaptation (30.0)", "SSG (last 35.0)"]


def cost(total, rss=1.0, gpu=None, **phases):
    return {"seconds": {**phases, "total": total}, "peak_rss_gib": rss, "attempts": 1,
            **({"peak_gpu_gib": gpu} if gpu is not None else {})}


CPU_HEADER = {"device": "cpu", "device_name": "AMD EPYC", "cpu_name": "AMD EPYC", "gpus": 0, "cpus": 2, "threads": 2,
              "workers": 2, "torch": "2.14.1", "amp": None, "processes": 1, "bn_group_size": 64, "sync_bn": True}
COSTED_SSG = {
    "run": [CPU_HEADER],
    "before": entry(19.1, 46.8, cost=cost(2.5, evaluation=2.0)),
    "iteration_0": entry(20.0, 44.0, cost=cost(80.0, rss=2.0, features=10.0, grouping=3.0, training=60.0,
                                               evaluation=4.0, checkpoint=1.0)),
    "iteration_1": entry(57.0, 81.5, cost=cost(70.0, rss=1.5, features=8.0, grouping=2.0, training=50.0,
                                               evaluation=4.0, checkpoint=1.0)),
}


def test_the_cost_table_sums_and_averages_the_phases_and_projects_the_papers_setting(tmp_path, capsys):
    write_stage(tmp_path, COSTED_SSG, src_dataset="synth_a", tgt_dataset="synth_b", epochs=10)
    assert run_main(main, [str(tmp_path)]) == 0
    output = capsys.readouterr().out
    assert output.index("best (selected") < output.index("cost: seconds")  # after the stage's table
    # features grouping training evaluation checkpoint other total peak RSS; other = total less the phases
    assert table_row(output, "iterations (2)") == ["18.0", "5.0", "110.0", "8.0", "2.0", "7.0", "150.0", "2.00"]
    assert table_row(output, "per iteration") == ["9.0", "2.5", "55.0", "4.0", "1.0", "3.5", "75.0", "2.00"]
    assert table_row(output, "before-adaptation evaluation") == ["-", "-", "-", "2.0", "-", "0.5", "2.5", "1.00"]
    assert table_row(output, "stage total") == ["18.0", "5.0", "110.0", "10.0", "2.0", "7.5", "152.5", "2.00"]
    assert "slowest phase: training, 72% of 2.5 min" in output
    assert "ran on: CPU AMD EPYC, 2 cores, 2 threads, 2 loader workers; torch 2.14.1" in output
    # Fixed cost: mean of (80 - 60, 70 - 50) = 20 s; an epoch: 110 s / (2 x 10) = 5.5 s;
    # 2.5 + 30 x (20 + 70 x 5.5) = 12,152.5 s = 3.4 h.
    assert ("projection, not a measurement: the paper's 30 iterations x 70 epochs with this run's data, model and "
            "machine: 3.4 h") in output
    assert "  = before-adaptation evaluation 2.5 s + 30 x (fixed 20.0 s + 70 x epoch 5.50 s)\n" in output


def test_ssgpp_projects_the_iterations_before_and_with_labels_apart(tmp_path, capsys):
    plain = cost(60.0, features=10.0, grouping=5.0, propagation=0.0, training=40.0, evaluation=5.0)
    labelled = cost(90.0, gpu=4.0, features=10.0, grouping=5.0, propagation=10.0, training=60.0, evaluation=5.0)
    metrics = {"before": entry(19.1, 46.8, cost=cost(2.5, evaluation=2.5)),
               **{f"iteration_{k}": entry(30.0, 50.0, cost=plain) for k in (0, 1)},
               **{f"iteration_{k}": entry(40.0, 60.0, labelled=10, cost=labelled) for k in (2, 3)}}
    write_stage(tmp_path, metrics, src_dataset="synth_a", tgt_dataset="synth_b", epochs=10, label_iteration=2)
    assert run_main(main, [str(tmp_path)]) == 0
    output = capsys.readouterr().out
    assert "peak GPU" in output and table_row(output, "iterations (4)")[-2:] == ["1.00", "4.00"]
    assert "ran on: not recorded" in output
    # 2.5 + 5 x (20 + 70 x 4) + 25 x (30 + 70 x 6) = 12,752.5 s = 3.5 h
    assert "epochs with this run's data, model and machine: 3.5 h" in output
    assert ("= before-adaptation evaluation 2.5 s + 5 x (fixed 20.0 s + 70 x epoch 4.00 s) [iterations before the "
            "labelled set: 2 measured] + 25 x (fixed 30.0 s + 70 x epoch 6.00 s) [iterations with labels: 2 "
            "measured]") in output

    del metrics["iteration_2"], metrics["iteration_3"]  # cut before the labels: their figures are the others'
    write_stage(tmp_path, metrics, src_dataset="synth_a", tgt_dataset="synth_b", epochs=10, label_iteration=2)
    assert run_main(main, [str(tmp_path)]) == 0
    output = capsys.readouterr().out
    assert "machine: 2.5 h" in output  # 2.5 + 30 x (20 + 70 x 4) = 9,002.5 s
    assert "[iterations with labels: none measured, the other kind's figures]" in output


def test_a_run_of_the_papers_length_gets_no_projection_and_old_logs_no_cost(tmp_path, capsys):
    metrics = {"before": entry(19.1, 46.8, cost=cost(2.0, evaluation=2.0)),
               **{f"iteration_{k}": entry(30.0, 50.0, cost=cost(10.0, training=8.0)) for k in range(30)}}
    write_stage(tmp_path / "ssg", metrics, src_dataset="synth_a", tgt_dataset="synth_b", epochs=70)
    write_stage(tmp_path / "ssgpp", SSG_METRICS, src_dataset="synth_a", tgt_dataset="synth_b", label_iteration=2)
    assert run_main(main, [str(tmp_path)]) == 0
    ssg, ssgpp = capsys.readouterr().out.split("\n\n")
    assert table_row(ssg, "stage total")[-2:] == ["302.0", "1.00"] and "projection" not in ssg
    assert "cost: not recorded in this metrics.json" in ssgpp


def test_the_source_cost_table_and_its_projection_of_150_validated_epochs(tmp_path, capsys):
    epochs = [{"epoch": k, "loss": 1.0, "cost": cost(15.0 if k % 2 else 12.0, training=10.0, checkpoint=1.0,
                                                      **({"validation": 3.0} if k % 2 else {}))} for k in range(4)]
    resumed_elsewhere = {**CPU_HEADER, "device_name": "AMD Ryzen", "cpu_name": "AMD Ryzen"}
    metrics = {"run": [CPU_HEADER, CPU_HEADER, resumed_elsewhere], "epochs": epochs, "selected_epoch": 3,
               "test_synth_a": entry(90.0, 92.0, cost=cost(5.0, evaluation=5.0)),
               "test_synth_b": entry(30.0, 40.0, cost=cost(4.0, evaluation=4.0))}
    write_stage(tmp_path, metrics, dataset="synth_a")
    assert run_main(main, [str(tmp_path)]) == 0
    output = capsys.readouterr().out
    # training validation evaluation checkpoint other total peak RSS
    assert table_row(output, "epochs (4)") == ["40.0", "6.0", "-", "4.0", "4.0", "54.0", "1.00"]
    assert table_row(output, "per epoch") == ["10.0", "1.5", "-", "1.0", "1.0", "13.5", "1.00"]
    assert table_row(output, "test evaluations (2)") == ["-", "-", "9.0", "-", "0.0", "9.0", "1.00"]
    assert "resumed 2 times, 1 on the same machine and settings\nresumed on: CPU AMD Ryzen" in output
    # 150 x (12 + 3) + 9 = 2,259 s
    assert "the paper's 150 epochs, each validated, with this run's data, model and machine: 37.6 min" in output
    assert "  = 150 x (epoch 12.0 s + validation 3.0 s) + test evaluations 9.0 s" in output
