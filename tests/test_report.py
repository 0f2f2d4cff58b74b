"""python -m reid.report on hand-made logs: before / last / best rows, the paper's row and the differences."""
import json

import pytest
from PIL import Image

from reid.report import BEST_LABEL, best_iteration, main
from reid.utils import plots
from reid.utils.logging import read_json
from reid.utils.plots import StageCurve
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


def test_adaptation_stage_prints_before_last_best_and_the_papers_row(tmp_path, capsys):
    write_stage(tmp_path, SSG_METRICS, src_dataset="dukemtmc", tgt_dataset="market1501")
    assert run_main(main, [str(tmp_path)]) == 0
    output = capsys.readouterr().out
    assert "SSG: dukemtmc -> market1501" in output
    assert table_row(output, "before adaptation") == ["-", "19.1", "46.8", "56.8", "61.8"]
    assert table_row(output, "last") == ["4", "58.5", "79.5", "89.5", "94.5"]
    assert table_row(output, BEST_LABEL) == ["1", "57.0", "81.5", "91.5", "96.5"]
    assert table_row(output, "paper (ICCV 2019)") == ["-", "58.3", "80.0", "90.0", "92.4"]
    assert table_row(output, "last - paper") == ["4", "+0.2", "-0.5", "-0.5", "+2.1"]
    assert table_row(output, "best - paper") == ["1", "-1.3", "+1.5", "+1.5", "+4.1"]


def test_run_sh_logs_report_every_stage_and_ssgpp_has_only_the_published_map(tmp_path, capsys):
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
    assert table_row(ssg, "paper (ICCV 2019)") == ["-", "53.4", "73.0", "-", "83.2"]
    assert ssgpp.startswith("SSG++: market1501 -> dukemtmc")
    assert table_row(ssgpp, "best - paper") == ["0", "+0.7", "-", "-", "-"]


def test_a_synthetic_pair_has_no_paper_row_and_rerank_columns_appear(tmp_path, capsys):
    metrics = {"before": entry(27.5, 30.8, mAP_rerank=33.0, top1_rerank=35.0, top5_rerank=50.0, top10_rerank=60.0),
               "iteration_0": entry(36.8, 43.3, mAP_rerank=40.1, top1_rerank=45.5, top5_rerank=60.0,
                                    top10_rerank=70.0)}
    write_stage(tmp_path, metrics, src_dataset="synth_a", tgt_dataset="synth_b")
    assert run_main(main, [str(tmp_path)]) == 0
    output = capsys.readouterr().out
    assert "paper" not in output and "rr mAP" in output
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

    stages = [StageCurve("SSG", SSG_METRICS, 58.3), StageCurve("SSG++", semi, 68.7)]
    lines = {line.get_label(): line for line in plots._report_figure(
        plots._agg_figure_factory()(), stages, "title").axes[0].get_lines()}
    assert list(lines["SSG (last 58.5)"].get_ydata()) == [20.0, 57.0, 56.0, 59.9, 58.5]
    assert list(lines["SSG++ (last 70.0)"].get_xdata()) == [0, 1, 2, 3, 4]
    assert list(lines["before adaptation (19.1)"].get_ydata()) == [19.1, 19.1]
    assert (list(lines["SSG, paper (58.3)"].get_xdata()), list(lines["SSG++, paper (68.7)"].get_ydata())) == \
        ([4], [68.7])


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
