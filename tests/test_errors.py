"""Bad input gets one clear line on stderr and exit status 2, checked before expensive work; --debug shows
the traceback."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, adapt_argv, assert_one_line, run

import selftraining
import semitraining
import source_train
from reid import models
from reid.grouping import Grouping, check_enough_clusters
from reid.trainers import BaseTrainer, SSGTrainer
from reid.utils.errors import UserError
from reid.utils.logs_dir import claim_logs_dir, release_logs_dir
from reid.utils.runtime import Runtime, run_main
from reid.utils.serialization import load_checkpoint, save_checkpoint


def test_missing_dataset_folder(tmp_path, capsys):
    argv = ["--dataset", "market1501", "--data_dir", str(tmp_path / "none"), "--logs_dir", str(tmp_path / "logs"),
            "--no-pretrained", *TINY_MODEL]
    status, lines = run(source_train.main, argv, capsys)
    assert_one_line(status, lines, "market1501", "bounding_box_train")


def test_unknown_dataset_lists_known_names(tmp_path, capsys):
    status, lines = run(source_train.main, ["--dataset", "viper", "--logs_dir", str(tmp_path)], capsys)
    assert_one_line(status, lines, "viper", "market1501", "synth_b")


def test_num_split_must_divide_feature_map(tmp_path, capsys):
    status, lines = run(source_train.main, ["--dataset", "synth_a", "--logs_dir", str(tmp_path), "--num-split", "3",
                                            *TINY_MODEL], capsys)
    assert_one_line(status, lines, "--num-split 3")
    assert not (tmp_path / "log.txt").exists()  # refused before the run started


def test_batch_must_be_a_multiple_of_num_instances(tmp_path, capsys):
    status, lines = run(source_train.main, ["--dataset", "synth_a", "--logs_dir", str(tmp_path), "-b", "10",
                                            "--num-instances", "4", *TINY_MODEL], capsys)
    assert_one_line(status, lines, "--batch-size 10", "--num-instances 4")


def test_ssgpp_batch_must_hold_whole_labelled_identities_of_four(tmp_path, tiny_pair, source_checkpoint, capsys):
    argv = adapt_argv(tiny_pair, tmp_path, source_checkpoint, "-b", "6", "--num-instances", "3", "--bn-group-size", "6")
    status, lines = run(semitraining.main, argv, capsys)
    assert_one_line(status, lines, "--batch-size 6", "labelled loader's images per identity, 4")
    assert not (tmp_path / "log.txt").exists()  # refused before the run started


def test_bn_groups_must_tile_the_batch(tmp_path, tiny_pair, source_checkpoint, capsys):
    argv = adapt_argv(tiny_pair, tmp_path, source_checkpoint)
    argv[argv.index("--bn-group-size") + 1] = "64"  # the default, the paper's setting, needs batches of 64k
    status, lines = run(selftraining.main, argv, capsys)
    assert_one_line(status, lines, "--bn-group-size 64", "--batch-size 8")
    assert not (tmp_path / "log.txt").exists()  # refused before the run started


def test_unwritable_logs_dir(tmp_path, tiny_pair, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    status, lines = run(source_train.main, ["--dataset", "synth_a", "--data_dir", str(tiny_pair), "--logs_dir",
                                            str(blocker / "logs"), "--no-pretrained", *TINY_MODEL], capsys)
    assert_one_line(status, lines, "--logs-dir", "cannot write")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_unreadable_source_checkpoint(tmp_path, tiny_pair, capsys, content):
    bad = tmp_path / "model.pth.tar"
    bad.write_bytes(content)
    status, lines = run(selftraining.main, adapt_argv(tiny_pair, tmp_path / "logs", bad), capsys)
    assert_one_line(status, lines, str(bad))
    assert not (tmp_path / "logs").exists()


def test_truncated_checkpoint(tmp_path, tiny_pair, source_checkpoint, capsys):
    data = (source_checkpoint / "checkpoint.pth.tar").read_bytes()
    bad = tmp_path / "truncated.pth.tar"
    bad.write_bytes(data[: len(data) // 3])
    status, lines = run(selftraining.main, adapt_argv(tiny_pair, tmp_path / "logs", bad), capsys)
    assert_one_line(status, lines, "truncated.pth.tar", "not a readable checkpoint")


def test_checkpoint_of_another_architecture(tmp_path, tiny_pair, source_checkpoint, capsys):
    argv = adapt_argv(tiny_pair, tmp_path / "logs", source_checkpoint)
    argv[argv.index("resnet18")] = "resnet34"
    status, lines = run(selftraining.main, argv, capsys)
    assert_one_line(status, lines, "-a/--arch resnet18", "resnet34")


def test_checkpoint_of_another_num_split_cannot_be_resumed(tmp_path, tiny_pair, source_checkpoint, capsys):
    run_state = load_checkpoint(str(source_checkpoint / "checkpoint.pth.tar"))
    save_checkpoint({**run_state, "optimizer": {}, "epoch": 1}, str(tmp_path / "checkpoint.pth.tar"))
    argv = adapt_argv(tiny_pair, tmp_path / "logs", source_checkpoint, "--resume-from",
                      str(tmp_path / "checkpoint.pth.tar"), "--num-split", "1")
    status, lines = run(selftraining.main, argv, capsys)
    assert_one_line(status, lines, "--num-split 2", "asks for 1")


def test_weights_of_another_shape(tmp_path, tiny_pair, capsys):
    model = models.create("resnet18", num_split=2, num_features=32, pretrained=False)
    bad = tmp_path / "foreign.pth.tar"
    state = model.state_dict()
    state["feat.weight"] = torch.zeros(32, 100)
    torch.save({"state_dict": state}, bad)
    status, lines = run(selftraining.main, adapt_argv(tiny_pair, tmp_path / "logs", bad), capsys)
    assert status == 2 and "do not fit this model" in lines[0] and len(lines) == 1


@pytest.mark.slow
def test_corrupt_jpeg_is_named(tmp_path, tiny_pair, source_checkpoint, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_pair, data)
    victim = sorted((data / "synth_b" / "query").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:100])
    status, lines = run(selftraining.main, adapt_argv(data, tmp_path / "logs", source_checkpoint), capsys)
    assert_one_line(status, lines, victim.name, "cannot read image")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(UserError):
        run_main(source_train.main, ["--dataset", "synth_a", "--logs_dir", str(tmp_path), "--num-split", "3",
                                     "--debug", *TINY_MODEL])


def test_too_few_clusters_stop_cleanly():
    labels = np.array([[0, 0, 0], [0, 0, 0], [1, 1, 1], [-1, 0, 0]])
    merged = r"grouping kept 1 usable clusters \(2 of 3 images\), a batch of 8 needs 2; .*try a smaller --rho"
    with pytest.raises(UserError, match=merged):
        check_enough_clusters(Grouping(labels[[0, 1, 3]], [0.1] * 3), batch_size=8, num_instances=4, iteration=3)
    outliers = np.array([[0, 0, 0], [0, 0, 0], [-1, 0, 0], [-1, 0, 0], [-1, 0, 0]])
    with pytest.raises(UserError, match=r"\(2 of 5 images\).*try a larger --rho"):
        check_enough_clusters(Grouping(outliers, [0.1] * 3), batch_size=8, num_instances=4, iteration=3)
    check_enough_clusters(Grouping(labels, [0.1] * 3), batch_size=8, num_instances=4, iteration=3)


def test_nan_loss_stops_with_a_clear_message_naming_its_batch():
    class NanFromBatch3(BaseTrainer):
        def loss(self, batch):
            value, index = batch
            return self.model(value).sum() * (float("nan") if index >= 3 else 1.0), {}

    model = torch.nn.Linear(2, 1)
    trainer = NanFromBatch3(model, Runtime(torch.device("cpu")), print_freq=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(torch.ones(1, 2), index) for index in range(1, 7)]
    # The losses are read every 4 batches: the NaN of batch 3 is found at the read after batch 4.
    with pytest.raises(UserError, match="loss became nan at epoch 0 batch 3;"):
        trainer.train(0, batches, optimizer)


@pytest.mark.slow
def test_ctrl_c_stops_with_a_message_and_keeps_the_last_checkpoint(tmp_path, tiny_pair, source_checkpoint, capsys,
                                                                   monkeypatch):
    calls = []
    original = SSGTrainer.train

    def interrupted_in_second_iteration(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SSGTrainer, "train", interrupted_in_second_iteration)
    logs = tmp_path / "logs"
    argv = adapt_argv(tiny_pair, logs, source_checkpoint, "--iteration", "2")
    status, lines = run(selftraining.main, argv, capsys)
    assert status == 130 and lines == ["interrupted: stopped; the last saved checkpoint is kept"]
    assert load_checkpoint(str(logs / "checkpoint.pth.tar"))["epoch"] == 1
    metrics = json.loads((logs / "metrics.json").read_text())
    assert list(metrics) == ["run", "before", "iteration_0", "cost_partial"]
    assert metrics["cost_partial"]["record"] == "iteration_1"  # the seconds a resumed run adds to iteration 1


@pytest.fixture(scope="module")
def finished_iteration_0(tmp_path_factory, tiny_pair, source_checkpoint):
    """The logs dir of a run stopped after iteration 0."""
    logs = tmp_path_factory.mktemp("interrupted")
    argv = adapt_argv(tiny_pair, logs, source_checkpoint)
    assert run_main(selftraining.main, argv) == 0
    return logs


@pytest.fixture
def interrupted_run(finished_iteration_0, tmp_path):
    """A copy of :func:`finished_iteration_0` to continue or damage."""
    return shutil.copytree(finished_iteration_0, tmp_path / "interrupted")


def continue_run(logs, tiny_pair, source_checkpoint, capsys):
    """Status and stderr lines of ``--resume-from logs`` for a second iteration."""
    argv = adapt_argv(tiny_pair, logs, source_checkpoint, "--iteration", "2", "--resume-from", str(logs))
    return run(selftraining.main, argv, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated checkpoint", "source model", "truncated metrics", "foreign metrics"])
def test_resume_from_a_damaged_or_foreign_file_names_it(tmp_path, tiny_pair, source_checkpoint, interrupted_run,
                                                        capsys, damage):
    checkpoint, metrics = interrupted_run / "checkpoint.pth.tar", interrupted_run / "metrics.json"
    if damage == "truncated checkpoint":
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
        victim, fragment = checkpoint, "not a readable checkpoint"
    elif damage == "source model":
        shutil.copyfile(source_checkpoint / "checkpoint.pth.tar", checkpoint)
        victim, fragment = checkpoint, "not a checkpoint to continue a run from"
    else:
        metrics.write_text('{"before": {"mAP": 1' if damage == "truncated metrics" else '["not", "a", "record"]')
        victim, fragment = metrics, "metrics.json"
    status, lines = continue_run(interrupted_run, tiny_pair, source_checkpoint, capsys)
    assert_one_line(status, lines, str(victim), fragment)


def test_a_second_run_on_a_held_logs_dir_stops_at_once(tmp_path, tiny_pair, source_checkpoint, capsys):
    """Another process holds the logs dir as a live run does; once it is killed, the logs dir is free again."""
    logs = tmp_path / "logs"
    logs.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom reid.utils.logs_dir import claim_logs_dir"
                               f"\nclaim_logs_dir({str(logs)!r})\nprint('held', flush=True)\ntime.sleep(600)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        status, lines = run(selftraining.main, adapt_argv(tiny_pair, logs, source_checkpoint), capsys)
        assert_one_line(status, lines, f"--logs-dir {logs}: another run is writing there", f"pid {holder.pid}")
        assert sorted(os.listdir(logs)) == ["run.lock"]  # nothing written: no log.txt, args.json, metrics
    finally:
        holder.kill()
        holder.wait()
    claim_logs_dir(str(logs))  # the killed holder left nothing stuck
    release_logs_dir()


def test_claiming_a_logs_dir_removes_what_a_killed_writer_left(tmp_path):
    """torchrun's SIGTERM to a restarted worker group, or a SIGKILL, runs no ``finally``: the half-written
    temporary file of the killed writer stays until the next run claims the logs dir."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / "plots").mkdir()
    stale = [tmp_path / f".metrics.json.{dead_pid}.tmp", tmp_path / "plots" / f".accuracy.png.{dead_pid}.tmp"]
    kept = [tmp_path / f".model_best.pth.tar.{os.getpid()}.tmp",  # a live process's write in flight
            tmp_path / ".notes.tmp", tmp_path / "metrics.json"]
    for fpath in stale + kept:
        fpath.write_text("{")
    claim_logs_dir(str(tmp_path))
    release_logs_dir()
    assert [fpath.exists() for fpath in stale + kept] == [False, False, True, True, True]


def test_a_user_error_under_torchrun_names_its_rank(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")

    def fails(argv):
        raise UserError("--resume-from x: no such checkpoint file or logs dir")

    status, lines = run(fails, [], capsys)
    assert_one_line(status, lines, "error: rank 1: --resume-from x")


@pytest.mark.parametrize("message", [
    "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:5792: Connection reset by "
    "peer. This is typically caused by a remote worker hanging or bugs in the application.",
    "Application timeout caused pair closure",
])
def test_a_lost_peer_ends_a_rank_with_one_line(monkeypatch, capsys, message):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")

    def collective_fails(argv):
        raise RuntimeError(message)

    status, lines = run(collective_fails, [], capsys)
    assert status == 1 and len(lines) == 1, lines
    assert lines[0].startswith("error: rank 0: lost the other ranks (") and "--dist-timeout" in lines[0]
    assert ("Read error [127.0.0.1]:5792: Connection reset by peer)" in lines[0]) != ("pair closure" in lines[0])


def test_a_bug_under_torchrun_keeps_its_traceback(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")

    def bug(argv):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_main(bug, [])
