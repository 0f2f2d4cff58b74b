"""The adaptation scripts under torchrun: 2 CPU processes (gloo) train on the same labels and rank 0 writes a
complete metrics.json."""
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO, adapt_argv

from reid import datasets

pytestmark = pytest.mark.slow


def run_two_processes(script, options, data_dir, source, logs):
    """Runs ``script`` under torchrun with 2 processes on the tiny profile (a BatchNorm group of 8 spans both
    ranks of 4 images); returns what the ranks printed."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / script), *adapt_argv(data_dir, logs, source, "--gpu-devices", "cpu", *options)]
    # Unbuffered: each rank's line reaches the shared pipe in one write, never split by the other rank's output.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def assert_same_digest_on_both_ranks(output, what):
    digests = re.findall(rf"rank (\d): {what} digest ([0-9a-f]{{12}})", output)
    assert sorted(rank for rank, _ in digests) == ["0", "1"], what
    assert len({digest for _, digest in digests}) == 1, what


def test_two_process_selftraining(tiny_pair, source_checkpoint, tmp_path):
    output = run_two_processes("selftraining.py", [], tiny_pair, source_checkpoint, tmp_path)
    assert_same_digest_on_both_ranks(output, "pseudo-labels")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics) == ["run", "before", "iteration_0"]
    assert {"mAP", "top1", "clusters_global", "images_kept"} <= set(metrics["iteration_0"])
    assert [header["processes"] for header in metrics["run"]] == [2]  # rank 0's header, once
    assert set(metrics["iteration_0"]["cost"]["seconds"]) == {"features", "grouping", "training", "evaluation",
                                                              "checkpoint", "total"}
    assert (tmp_path / "checkpoint.pth.tar").exists()


def test_two_process_semitraining_two_forward_passes_per_step(tiny_pair, source_checkpoint, tmp_path):
    """Each step runs a cluster batch and a labelled batch through the DDP model before one backward."""
    output = run_two_processes("semitraining.py", ["--label-iteration", "0"], tiny_pair, source_checkpoint,
                               tmp_path)
    assert_same_digest_on_both_ranks(output, "pseudo-labels")
    assert_same_digest_on_both_ranks(output, "labelled set")
    entry = json.loads((tmp_path / "metrics.json").read_text())["iteration_0"]
    labelled = json.loads((tmp_path / "labelled_set.json").read_text())["indices"]
    num_images = len(datasets.create("synth_b", str(tiny_pair / "synth_b")).trainval)
    # One iteration: the schedule propagates to every unlabelled image at once.
    assert entry["labelled"] == len(labelled) and entry["propagated"] == num_images - len(labelled)
    assert entry["loss"] > 0 and {"mAP", "top1"} <= set(entry)
