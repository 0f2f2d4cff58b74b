"""Self-training under torchrun: 2 CPU processes (gloo) train on the same pseudo-labels and rank 0 writes a
complete metrics.json."""
import json
import os
import re
import subprocess
import sys

import torch

from reid import models
from reid.utils.serialization import save_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_process_selftraining(tiny_pair, tmp_path):
    source = tmp_path / "source.pth.tar"
    torch.manual_seed(0)
    model = models.create("resnet18", num_split=2, num_features=32, pretrained=False)
    save_checkpoint({"state_dict": model.state_dict(), "epoch": 1}, str(source))
    logs = tmp_path / "logs"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               os.path.join(REPO, "selftraining.py"), "--src_dataset", "synth_a", "--tgt_dataset", "synth_b",
               "--data_dir", str(tiny_pair), "--logs_dir", str(logs), "--resume", str(source), "--iteration", "1",
               "--epochs", "1", "-b", "8", "--num-instances", "4", "--rho", "0.05", "-a", "resnet18", "--height",
               "64", "--width", "32", "--features", "32", "--workers", "0", "--gpu-devices", "cpu",
               "--bn-group-size", "8"]  # a BatchNorm group spans both ranks of 4 images
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    digests = re.findall(r"rank (\d): pseudo-labels digest (\w+)", result.stdout + result.stderr)
    assert sorted(rank for rank, _ in digests) == ["0", "1"]
    assert len({digest for _, digest in digests}) == 1
    metrics = json.loads((logs / "metrics.json").read_text())
    assert list(metrics) == ["before", "iteration_0"]
    assert {"mAP", "top1", "clusters_global", "images_kept"} <= set(metrics["iteration_0"])
    assert (logs / "checkpoint.pth.tar").exists()
