"""Every option of every entry point acts: a run of each script with its parser's namespace recording which
options the code reads finds none left unread; the options that cannot act together are refused with one line."""
import argparse

import pytest
from conftest import TINY_MODEL, adapt_argv, assert_one_line, run, write_small_checkpoint

import selftraining
import semitraining
import source_train
from reid import export, extract, report
from reid.datasets import synthetic
from reid.utils.runtime import run_main

pytestmark = pytest.mark.slow
# run_main reads --debug from the command line itself, before the parser (tests/test_errors.py shows it acts).
READ_BEFORE_PARSING = {"debug"}


@pytest.fixture
def unread(monkeypatch):
    """Runs ``main(argv)`` with every parser's namespace recording the attributes read after parsing; returns
    the options (their dests) that no code read."""
    def options_left_unread(main, argv):
        parsers, read = [], set()
        original = argparse.ArgumentParser.parse_args

        class Recording(argparse.Namespace):
            def __getattribute__(self, name):
                read.add(name)
                return super().__getattribute__(name)

        def recording_parse_args(parser, args=None, namespace=None):
            parsers.append(parser)
            parsed = original(parser, args, namespace or Recording())
            read.clear()  # argparse itself looks every option up while parsing
            return parsed

        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", recording_parse_args)
        assert run_main(main, argv) == 0
        monkeypatch.undo()
        dests = {action.dest for parser in parsers for action in parser._actions if action.dest != "help"}
        return dests - read - READ_BEFORE_PARSING

    return options_left_unread


def test_every_option_of_source_training_is_read(unread, tiny_pair, tmp_path):
    argv = ["--dataset", "synth_a", "--test-datasets", "synth_b", "--data_dir", str(tiny_pair), "--logs_dir",
            str(tmp_path), "--epochs", "1", "-b", "16", "--num-instances", "4", "--no-pretrained", "--num-val", "8",
            "--save-features", str(tmp_path / "features.h5"), "--visrank", "1", *TINY_MODEL]
    assert unread(source_train.main, argv) == set()


@pytest.mark.parametrize("script", [selftraining, semitraining])
def test_every_option_of_the_adaptation_scripts_is_read(unread, script, tiny_pair, source_checkpoint, tmp_path):
    argv = adapt_argv(tiny_pair, tmp_path, source_checkpoint, "--visrank", "1", "--save-features",
                      str(tmp_path / "features.h5"), *(["--label-iteration", "0"] if script is semitraining else []))
    assert unread(script.main, argv) == set()


def test_every_option_of_the_tools_is_read(unread, tiny_pair, tmp_path):
    write_small_checkpoint(tmp_path)
    images = tiny_pair / "synth_b" / "query"
    assert unread(extract.main, ["--resume", str(tmp_path), "--images", str(images), "--out",
                                 str(tmp_path / "f.h5"), "--workers", "0"]) == set()
    assert unread(export.main, ["--resume", str(tmp_path), "--out", str(tmp_path / "model.onnx")]) == set()
    assert unread(synthetic.main, ["--root", str(tmp_path / "domain"), "--domain", "synth_b", "--num-train-ids",
                                   "2", "--num-test-ids", "2", "--num-cameras", "2"]) == set()
    logs = tmp_path / "logs"
    source_train.main(["--dataset", "synth_a", "--data_dir", str(tiny_pair), "--logs_dir", str(logs), "--resume",
                       str(tmp_path), "--evaluate", "--workers", "0"])
    assert unread(report.main, [str(logs)]) == set()


def test_options_that_cannot_act_together_are_refused(tiny_pair, source_checkpoint, tmp_path, capsys):
    logs = tmp_path / "logs"
    status, lines = run(selftraining.main, adapt_argv(tiny_pair, logs, source_checkpoint, "--no-sync-bn"), capsys)
    assert_one_line(status, lines, "--no-sync-bn", "--bn-group-size 8")
    status, lines = run(selftraining.main, adapt_argv(tiny_pair, logs, source_checkpoint, "--evaluate",
                                                      "--resume-from", str(logs)), capsys)
    assert_one_line(status, lines, "--evaluate", "--resume-from")
    for refused in (["--dropout", "0.2"], ["--no-pretrained"], ["--pretrained-path", "x.pth"]):
        status, lines = run(semitraining.main, adapt_argv(tiny_pair, logs, source_checkpoint, *refused), capsys)
        assert_one_line(status, lines, f"unrecognized arguments: {' '.join(refused)}")
    source = ["--dataset", "synth_a", "--data_dir", str(tiny_pair), "--logs_dir", str(logs), *TINY_MODEL]
    status, lines = run(source_train.main, [*source, "--momentum", "0.9"], capsys)
    assert_one_line(status, lines, "unrecognized arguments: --momentum 0.9")
    status, lines = run(source_train.main, [*source, "--resume", str(source_checkpoint), "--pretrained-path",
                                            "resnet.pth"], capsys)
    assert_one_line(status, lines, "--pretrained-path", "--resume")
    assert not logs.exists()  # refused before the run started
