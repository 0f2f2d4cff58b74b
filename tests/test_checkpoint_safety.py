"""A checkpoint is read by the weights-only unpickler at every entry point: a file whose pickle would call a
function (here os.system) stops with one line before anything of it runs; the authors' files load as they are;
a file the user names in REID_TRUSTED_CHECKPOINTS is read in full."""
import argparse
import os

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, adapt_argv, assert_one_line, run

import selftraining
import semitraining
import source_train
from reid import export, extract
from reid.experiment import run_checkpoint_in
from reid.utils.errors import UserError
from reid.utils.serialization import load_checkpoint
from reid.utils.weights_only import ALLOWED_GLOBALS, TRUST_VARIABLE
from tests.released_checkpoint import save_as_released


class Payload:
    """What a tampered checkpoint carries: unpickling it runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_payload(path, marker, legacy=False):
    """A checkpoint in this project's layout whose ``epoch`` is :class:`Payload`; ``legacy``: PyTorch 0.4's
    format, as the authors' files."""
    state = {"state_dict": {"feat.weight": torch.zeros(4, 4)}, "epoch": Payload(marker), "best_top1": 80.0}
    if legacy:
        save_as_released(state, path)
    else:
        torch.save(state, path)
    return path


@pytest.fixture
def payload(tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_VARIABLE, raising=False)
    marker = tmp_path / "payload-ran"
    return write_payload(tmp_path / "model.pth.tar", marker), marker


ENTRY_POINTS = {
    "source_train --resume": lambda data, logs, ckpt: (source_train.main, [
        "--dataset", "synth_a", "--data_dir", str(data), "--logs_dir", str(logs), "--resume", str(ckpt), *TINY_MODEL]),
    "source_train --pretrained-path": lambda data, logs, ckpt: (source_train.main, [
        "--dataset", "synth_a", "--data_dir", str(data), "--logs_dir", str(logs), "--pretrained-path", str(ckpt),
        "--epochs", "1", "-b", "16", *TINY_MODEL]),
    "selftraining --resume": lambda data, logs, ckpt: (selftraining.main, adapt_argv(data, logs, ckpt)),
    "selftraining --resume-from": lambda data, logs, ckpt: (selftraining.main, adapt_argv(
        data, logs, ckpt, "--resume-from", str(ckpt))),
    "semitraining --resume": lambda data, logs, ckpt: (semitraining.main, adapt_argv(data, logs, ckpt)),
    "semitraining --resume-from": lambda data, logs, ckpt: (semitraining.main, adapt_argv(
        data, logs, ckpt, "--resume-from", str(ckpt))),
    "reid.extract": lambda data, logs, ckpt: (extract.main, [
        "--resume", str(ckpt), "--images", str(data / "synth_b" / "query"), "--out", str(logs / "f.h5"),
        "--workers", "0"]),
    "reid.export": lambda data, logs, ckpt: (export.main, ["--resume", str(ckpt), "--out", str(logs / "m.onnx")]),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_payload_runs_at_no_entry_point(entry, payload, tiny_pair, tmp_path, capsys):
    path, marker = payload
    status, lines = run(*ENTRY_POINTS[entry](tiny_pair, tmp_path / "logs", path), capsys)
    assert not marker.exists()
    assert_one_line(status, lines, f"{path}: refused, loading it would call posix.system", f"{TRUST_VARIABLE}={path}")


def test_a_restarted_worker_group_reads_no_payload_from_the_logs_dir(tmp_path, monkeypatch):
    """What a worker group that torchrun restarted reads to continue the run."""
    monkeypatch.delenv(TRUST_VARIABLE, raising=False)
    marker = tmp_path / "payload-ran"
    write_payload(tmp_path / "checkpoint.pth.tar", marker)
    with pytest.raises(UserError, match=r"checkpoint\.pth\.tar: refused, loading it would call posix\.system"):
        run_checkpoint_in(str(tmp_path), "run-1")
    assert not marker.exists()


def test_a_legacy_format_payload_is_refused_and_the_allowlist_is_not_left_behind(tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_VARIABLE, raising=False)
    marker = tmp_path / "payload-ran"
    path = write_payload(tmp_path / "released.pth.tar", marker, legacy=True)
    with pytest.raises(UserError, match="refused, loading it would call posix.system"):
        load_checkpoint(str(path))
    assert not marker.exists()
    assert not set(ALLOWED_GLOBALS) & set(torch.serialization.get_safe_globals())


def test_numpy_scalars_load_but_a_numpy_array_is_refused(tmp_path, monkeypatch):
    """The allowlist holds numpy's scalars, nothing more: an array needs numpy's array reconstruction."""
    monkeypatch.delenv(TRUST_VARIABLE, raising=False)
    path = tmp_path / "ckpt.pth.tar"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": np.int64(7), "best_top1": np.float64(0.5)}, path)
    checkpoint = load_checkpoint(str(path))
    assert checkpoint["epoch"] == 7 and checkpoint["best_top1"] == 0.5
    torch.save({"state_dict": {"w": torch.ones(2)}, "history": np.arange(3)}, path)
    with pytest.raises(UserError, match=r"would call numpy\._core\.multiarray\._reconstruct"):
        load_checkpoint(str(path))


def test_only_the_file_the_user_names_is_trusted(tmp_path, monkeypatch):
    """A checkpoint of another code base that stores its argparse options: refused, then read once named."""
    path = tmp_path / "other.pth.tar"
    torch.save({"state_dict": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=0.1)}, path)
    monkeypatch.setenv(TRUST_VARIABLE, str(tmp_path / "another.pth.tar"))
    with pytest.raises(UserError, match=f"would call argparse.Namespace.*{TRUST_VARIABLE}={path}"):
        load_checkpoint(str(path))
    link = tmp_path / "link.pth.tar"
    link.symlink_to(path)
    monkeypatch.setenv(TRUST_VARIABLE, os.pathsep.join([str(tmp_path / "another.pth.tar"), str(link)]))
    assert load_checkpoint(str(path))["args"].lr == 0.1


class ObjectDtypeState:
    """A dtype state that would turn numpy's object dtype into raw bytes: a numpy scalar built on it would read
    a pointer from the file."""

    def __reduce__(self):
        return np.dtype, ("O", False, True), (3, "|", None, None, None, -1, -1, 0)


def test_the_state_of_an_object_dtype_cannot_be_set(tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_VARIABLE, raising=False)
    path = tmp_path / "crafted.pth.tar"
    torch.save({"state_dict": {"w": torch.ones(2)}, "dtype": ObjectDtypeState()}, path)
    with pytest.raises(UserError, match=r"not a readable checkpoint \(Can only build .*ObjectDType"):
        load_checkpoint(str(path))
