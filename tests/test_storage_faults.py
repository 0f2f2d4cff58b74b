"""A write the system refuses stops the run with one line naming the file and the cause, the previous records
intact and no temporary file left; the run then continues with --resume-from.

Real faults: a file-size limit (RLIMIT_FSIZE) in a forked child, where the kernel answers EFBIG ("File too
large"; Python ignores SIGXFSZ), at each kind of write; and, as root, a small tmpfs that fills up ("No space
left on device").
"""
import errno
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import traceback
import warnings

import numpy as np
import pytest
import torch
from conftest import adapt_argv, assert_one_line
from records import results
from torch import nn

import selftraining
from reid.experiment import Scalars
from reid.export import export_onnx
from reid.feature_extraction import save_features_h5
from reid.models.resnet import ReIDOutput
from reid.propagation import load_or_draw_labelled_set
from reid.utils.logging import start_logging
from reid.utils.osutils import storage_fault
from reid.utils.plots import StageCurve, plot_metrics, plot_report
from reid.utils.records import MetricsLog, read_metrics
from reid.utils.runtime import run_main
from reid.utils.serialization import load_checkpoint, save_checkpoint

TOO_LARGE = "File too large"


def with_file_size_limit(limit, action):
    """Exit status and stderr lines of ``run_main(action)`` in a forked child whose files cannot grow past
    ``limit`` bytes."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 99
        try:
            os.close(read_end)
            torch.set_num_threads(1)  # the parent's OpenMP threads do not exist in a forked child
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
            sys.stderr = os.fdopen(write_end, "w", buffering=1)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
            status = run_main(lambda argv: action(), [])
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as stream:
        text = stream.read()
    _, wait_status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wait_status), [line for line in text.splitlines() if line.strip()]


def assert_storage_error(status, lines, fpath, cause):
    """One line that starts with the file and gives the system's cause."""
    assert_one_line(status, lines, f"error: {fpath}", f"({cause})")


def temporaries(folder):
    return [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names
            if name.endswith(".tmp")]


def adaptation_metrics(iterations):
    return {"before": {"mAP": 20.0, "top1": 40.0},
            **{f"iteration_{k}": {"mAP": 30.0 + k, "top1": 50.0 + k, "clusters_global": 40 - k, "images_kept": 300}
               for k in range(iterations)}}


class TinyModel(nn.Module):
    """Enough of reid's model for export_onnx: pooled features (B, 2, 32)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 3)

    def forward(self, images):
        pooled = self.conv(images).mean((2, 3)).view(-1, 2, 32)
        return ReIDOutput(pooled, pooled[:, 0], None)


def metrics_case(folder):
    metrics = MetricsLog(str(folder / "metrics.json"))
    metrics["before"] = {"mAP": 40.0}
    return folder / "metrics.json", lambda: metrics.update({"iteration_0": {"fnames": ["x" * 100] * 100}})


def labelled_set_case(folder):
    items = [(f"{'y' * 100}{i}.jpg", i, 0) for i in range(100)]
    fpath = folder / "labelled_set.json"
    return fpath, lambda: load_or_draw_labelled_set(str(fpath), items, np.arange(100), "cluster")


def checkpoint_case(folder):
    fpath = folder / "checkpoint.pth.tar"
    save_checkpoint({"state_dict": {"w": torch.zeros(10)}, "epoch": 1}, str(fpath))
    return fpath, lambda: save_checkpoint({"state_dict": {"w": torch.zeros(10_000)}, "epoch": 2}, str(fpath))


def plots_case(folder):
    plot_metrics(adaptation_metrics(1), str(folder / "plots"))
    return folder / "plots" / "accuracy.png", lambda: plot_metrics(adaptation_metrics(2), str(folder / "plots"))


def report_case(folder):
    fpath = folder / "report.png"
    plot_report([StageCurve("SSG", adaptation_metrics(1))], "synth_a -> synth_b", str(fpath))
    return fpath, lambda: plot_report([StageCurve("SSG", adaptation_metrics(3))], "synth_a -> synth_b", str(fpath))


def features_case(folder):
    fpath = folder / "features.h5"
    items = [(f"img{i}.jpg", i, 0) for i in range(300)]
    save_features_h5(str(fpath), {"query": (items[:2], torch.zeros(2, 8))})
    features = torch.from_numpy(np.random.default_rng(0).random((300, 64), dtype=np.float32))
    return fpath, lambda: save_features_h5(str(fpath), {"query": (items, features)})


def onnx_case(folder):
    fpath = folder / "model.onnx"
    fpath.write_bytes(b"the previous export")

    def export():
        warnings.simplefilter("ignore")  # the exporter's own notes are not the point here
        export_onnx(TinyModel(), 8, 8, str(fpath))

    return fpath, export


def log_case(folder):
    fpath = folder / "log.txt"
    fpath.write_text("the previous run's log\n")

    def chatty_run():
        start_logging(str(folder))
        for line in range(100):
            print(f"line {line} " + "z" * 100)

    return fpath, chatty_run


WRITES = {"metrics.json": (metrics_case, 4096), "labelled_set.json": (labelled_set_case, 4096),
          "checkpoint": (checkpoint_case, 8192), "plots": (plots_case, 4096), "report.png": (report_case, 4096),
          "features HDF5": (features_case, 16384), "ONNX": (onnx_case, 4096), "log.txt": (log_case, 2048)}


@pytest.mark.parametrize("kind", WRITES)
def test_a_write_past_a_file_size_limit_is_one_line_and_keeps_the_previous_file(kind, tmp_path):
    case, limit = WRITES[kind]
    fpath, write = case(tmp_path)
    before = fpath.read_bytes() if fpath.exists() else None
    status, lines = with_file_size_limit(limit, write)
    assert_storage_error(status, lines, fpath, TOO_LARGE)
    if kind == "log.txt":  # appended to: what was there is still there
        assert fpath.read_bytes().startswith(before) and len(fpath.read_bytes()) <= limit
    else:
        assert (fpath.read_bytes() if fpath.exists() else None) == before
    assert not temporaries(tmp_path)


def test_tensorboard_events_past_a_file_size_limit_are_one_line(tmp_path):
    pytest.importorskip("tensorboard")

    def run():
        scalars = Scalars(str(tmp_path), enabled=True)
        try:
            for step in range(200):
                scalars.add(step, {"mAP": float(step), "top1": float(step)})
        finally:  # TensorBoard's writer thread ends on the refused write: let it end (and say all it says) here
            for thread in threading.enumerate():
                if type(thread).__module__.startswith("tensorboard."):
                    thread.join()

    status, lines = with_file_size_limit(2048, run)
    assert_storage_error(status, lines, tmp_path / "tensorboard", TOO_LARGE)
    (events,) = os.listdir(tmp_path / "tensorboard")
    assert os.path.getsize(tmp_path / "tensorboard" / events) <= 2048


def raised_while_handling(fault, explicit):
    """The RuntimeError a writer raises while handling ``fault`` (torch.save), or ``from`` it (h5py)."""
    try:
        try:
            raise fault
        except OSError as exc:
            if explicit:
                raise RuntimeError("unexpected pos") from exc
            raise RuntimeError("unexpected pos")  # noqa: B904
    except RuntimeError as exc:
        return exc


def test_the_errno_is_found_through_the_writers_own_error():
    for explicit in (False, True):
        assert storage_fault(raised_while_handling(OSError(errno.EIO, "I/O"), explicit)).errno == errno.EIO
    assert storage_fault(RuntimeError("a bug, no system error behind it")) is None


@pytest.fixture(scope="module")
def finished_iteration_0(tmp_path_factory, tiny_pair, source_checkpoint):
    """The logs dir of a run stopped after its first iteration (checkpoint, model_best, metrics, plots)."""
    logs = tmp_path_factory.mktemp("finished")
    assert run_main(selftraining.main, adapt_argv(tiny_pair, logs, source_checkpoint, "--lambda-value", "0")) == 0
    if not (logs / "model_best.pth.tar").exists():  # as a run whose first iteration beat the source model
        shutil.copyfile(logs / "checkpoint.pth.tar", logs / "model_best.pth.tar")
    return logs


def second_iteration(data_dir, logs, source):
    return adapt_argv(data_dir, logs, source, "--lambda-value", "0", "--iteration", "2", "--resume-from", str(logs))


def assert_kept(logs):
    """The records of iteration 0 intact, nothing temporary left."""
    assert load_checkpoint(str(logs / "checkpoint.pth.tar"))["epoch"] == 1
    assert load_checkpoint(str(logs / "model_best.pth.tar"))["epoch"] == 1
    # metrics.json is written before the checkpoint: continuing redoes iteration 1 and rewrites its entry.
    assert list(results(read_metrics(str(logs / "metrics.json")))) == ["before", "iteration_0", "iteration_1"]
    assert not temporaries(logs)


def test_a_checkpoint_past_a_file_size_limit_stops_the_run(finished_iteration_0, tiny_pair, source_checkpoint,
                                                           tmp_path):
    logs = shutil.copytree(finished_iteration_0, tmp_path / "logs")
    status, lines = with_file_size_limit(
        1 << 20, lambda: selftraining.main(second_iteration(tiny_pair, logs, source_checkpoint)))
    assert_storage_error(status, lines, logs / "checkpoint.pth.tar", TOO_LARGE)
    assert_kept(logs)


@pytest.fixture
def small_disk(tmp_path):
    """A function mounting a tmpfs of the given size (bytes) on a new folder; root only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = []

    def mount(size):
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)


def folder_size(folder):
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)


def test_a_full_disk_stops_the_run_at_its_checkpoint_and_resume_from_finishes_it(
        finished_iteration_0, small_disk, tiny_pair, source_checkpoint, tmp_path, capsys):
    """The first checkpoint and model_best fit on the disk, the second checkpoint does not."""
    checkpoint_size = os.path.getsize(finished_iteration_0 / "checkpoint.pth.tar")
    disk = small_disk(folder_size(finished_iteration_0) + checkpoint_size // 2)
    logs = shutil.copytree(finished_iteration_0, disk / "logs")
    status = run_main(selftraining.main, second_iteration(tiny_pair, logs, source_checkpoint))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert_storage_error(status, lines, logs / "checkpoint.pth.tar", "No space left on device")
    assert lines[0] in (logs / "log.txt").read_text()
    assert_kept(logs)
    copy = shutil.copytree(logs, tmp_path / "continued")
    assert run_main(selftraining.main, second_iteration(tiny_pair, copy, source_checkpoint)) == 0, \
        capsys.readouterr().err
    assert load_checkpoint(str(copy / "checkpoint.pth.tar"))["epoch"] == 2
    assert list(results(read_metrics(str(copy / "metrics.json")))) == ["before", "iteration_0", "iteration_1"]


def test_a_full_disk_at_model_best_keeps_both_previous_files(small_disk):
    disk = small_disk(16 << 20)
    fpath, best = disk / "checkpoint.pth.tar", disk / "model_best.pth.tar"
    save_checkpoint({"state_dict": {"w": torch.zeros(1 << 20)}, "epoch": 1}, str(fpath), is_best=True)  # 4 MiB
    with pytest.raises(Exception, match=rf"{best}: could not be written \(No space left on device\); stopped"):
        save_checkpoint({"state_dict": {"w": torch.zeros(7 << 18)}, "epoch": 2}, str(fpath), is_best=True)  # 7 MiB
    assert load_checkpoint(str(fpath))["epoch"] == 2  # the new checkpoint fitted
    assert load_checkpoint(str(best))["epoch"] == 1
    assert sorted(os.listdir(disk)) == ["checkpoint.pth.tar", "model_best.pth.tar"]


def test_a_run_on_a_full_disk_writes_no_partial_metrics(small_disk):
    """Even metrics.json: its temporary file is refused, the previous JSON stays whole."""
    disk = small_disk(64 << 10)
    metrics = MetricsLog(str(disk / "metrics.json"))
    metrics["before"] = {"mAP": 40.0}
    (disk / "ballast").write_bytes(b"\0" * ((64 << 10) - 8192))
    with pytest.raises(Exception, match=r"metrics\.json: could not be written \(No space left on device\)"):
        metrics["iteration_0"] = {"fnames": ["x" * 100] * 200}
    assert json.loads((disk / "metrics.json").read_text()) == {"before": {"mAP": 40.0}}
    assert sorted(os.listdir(disk)) == ["ballast", "metrics.json"]
