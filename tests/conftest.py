"""What the tests share: the repository root, one tiny profile (data, model, adaptation command line), one way to
run a script and read its one-line errors, and the fixtures of a tiny synthetic pair and a source model.

Tests marked ``slow`` run the scripts end to end (in-process, under torchrun, or through ONNX);
``python -m pytest -m "not slow"`` runs the others, the unit tests, in about a minute on 2 cores.
"""
import os
import subprocess
from pathlib import Path

import pytest
import torch

from reid import models
from reid.datasets.synthetic import generate
from reid.utils.runtime import run_main
from reid.utils.serialization import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
# 40 test identities: enough strangers that an untrained network's colour features rank them poorly (mAP about
# 55), so that source training's gain is measured far from the ceiling.
TINY = dict(num_train_ids=32, num_test_ids=40, num_cameras=3, images_per_camera=(2, 3))
# The model of every tiny run, as a source checkpoint records it (CONFIG) and as options (TINY_MODEL).
CONFIG = {"arch": "resnet18", "num_split": 2, "features": 32, "height": 64, "width": 32}
TINY_MODEL = ["-a", "resnet18", "--height", "64", "--width", "32", "--features", "32", "--workers", "0",
              "--print-freq", "100"]


def adapt_argv(data_dir, logs_dir, resume, *extra) -> list[str]:
    """The tiny adaptation command line (selftraining.py, semitraining.py): the synthetic pair, one iteration of
    one epoch, batches of 2 clusters x 4 images in one BatchNorm group; ``extra`` options come last and win."""
    return ["--src_dataset", "synth_a", "--tgt_dataset", "synth_b", "--data_dir", str(data_dir), "--logs_dir",
            str(logs_dir), "--resume", str(resume), "--iteration", "1", "--epochs", "1", "-b", "8",
            "--num-instances", "4", "--bn-group-size", "8", "--rho", "0.05", "--lr", "1e-3", *TINY_MODEL, *extra]


def run(main, argv, capsys) -> tuple[int, list[str]]:
    """Exit status and the non-empty stderr lines of a script's ``main`` run as its command line runs it."""
    try:
        status = run_main(main, argv)
    except SystemExit as exc:  # argparse
        status = exc.code
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return status, lines


def assert_one_line(status, lines, *fragments):
    """Bad input: exit status 2 and one line ``error: ...`` holding every fragment."""
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[0]


def run_sh(tmp_path, **env) -> list[list[str]]:
    """The argument lists run.sh passes to Python, one per step: a stand-in Python records what it is asked to
    run (an ``env`` value of None unsets that variable)."""
    record = tmp_path / "calls.txt"
    record.unlink(missing_ok=True)
    stand_in = tmp_path / "python"
    stand_in.write_text(f'#!/usr/bin/env bash\necho "$*" >> {record}\n')
    stand_in.chmod(0o755)
    environment = {**os.environ, "PYTHON": str(stand_in), "LOGS_DIR": str(tmp_path / "logs"), **env}
    environment = {key: value for key, value in environment.items() if value is not None}
    subprocess.run(["bash", str(REPO / "run.sh")], check=True, env=environment, capture_output=True)
    return [line.split() for line in record.read_text().splitlines()]


def write_small_checkpoint(folder, seed: int = 3) -> torch.nn.Module:
    """A random ResNet-18 source model recording CONFIG, with a classifier of 8 identities, as source_train.py
    writes it (checkpoint.pth.tar and model_best.pth.tar in ``folder``); returns the model without its
    classifier, in eval mode."""
    torch.manual_seed(seed)
    model = models.create("resnet18", num_split=2, num_features=32, num_classes=8, pretrained=False)
    save_checkpoint({"state_dict": model.state_dict(), "epoch": 1, "config": CONFIG},
                    str(Path(folder) / "checkpoint.pth.tar"), is_best=True)
    model.classifier = None
    return model.eval()


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """``data_dir`` holding small ``synth_a`` and ``synth_b`` folders."""
    data_dir = tmp_path_factory.mktemp("data")
    for domain in ("synth_a", "synth_b"):
        generate(str(data_dir / domain), domain, **TINY)
    return data_dir


@pytest.fixture(scope="session")
def source_checkpoint(tmp_path_factory):
    """The logs dir of a random source model (:func:`write_small_checkpoint`) to adapt from."""
    folder = tmp_path_factory.mktemp("source")
    write_small_checkpoint(folder, seed=0)
    return folder
