"""A checkpoint knows its model: reid.extract, reid.export and the adaptation scripts take -a, --features,
--height, --width and --num-split from its recorded config when not given (the authors' files record none:
then the paper's), and a given value that contradicts it stops with one line."""
import argparse
import json

import pytest
import torch
from conftest import CONFIG, write_small_checkpoint

import selftraining
from reid.experiment import WEIGHT_KEYS, resolve_model_options
from reid.paper import PAPER_MODEL
from reid.utils.errors import UserError
from reid.utils.runtime import run_main


def options(**given):
    return argparse.Namespace(**{key: given.get(key) for key in PAPER_MODEL})


def test_options_not_given_come_from_the_checkpoint_else_the_paper():
    args = options(height=128)
    resolve_model_options(args, {"config": {"arch": "resnet18", "features": 32, "num_split": 1}}, "ck")
    assert vars(args) == {"arch": "resnet18", "num_split": 1, "features": 32, "height": 128, "width": 128}
    released = options()
    resolve_model_options(released, {"state_dict": {}}, "released.pth.tar")
    assert vars(released) == PAPER_MODEL == {"arch": "resnet50", "num_split": 2, "features": 2048, "height": 256,
                                             "width": 128}


def test_a_given_option_that_contradicts_the_checkpoint_stops():
    checkpoint = {"config": dict(CONFIG)}
    with pytest.raises(UserError, match="ck.pth.tar: checkpoint was trained with --height 64, this run asks for 256"):
        resolve_model_options(options(height=256), checkpoint, "ck.pth.tar")
    # only what the weights depend on is checked against a source model
    resolve_model_options(options(height=256, num_split=1), checkpoint, "ck.pth.tar", keys=WEIGHT_KEYS)
    with pytest.raises(UserError, match="-a/--arch resnet18, this run asks for resnet50"):
        resolve_model_options(options(arch="resnet50"), checkpoint, "ck.pth.tar", keys=WEIGHT_KEYS)


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    write_small_checkpoint(folder)
    return folder


@pytest.mark.slow
def test_adaptation_takes_the_model_from_the_source_checkpoint(tiny_pair, checkpoint_dir, tmp_path):
    argv = ["--src_dataset", "synth_a", "--tgt_dataset", "synth_b", "--data_dir", str(tiny_pair), "--logs_dir",
            str(tmp_path), "--resume", str(checkpoint_dir), "--iteration", "1", "--epochs", "1", "-b", "8",
            "--num-instances", "4", "--bn-group-size", "8", "--rho", "0.05", "--workers", "0", "--rerank"]
    assert run_main(selftraining.main, argv) == 0
    recorded = json.loads((tmp_path / "args.json").read_text())
    assert {key: recorded[key] for key in CONFIG} == CONFIG
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for entry in (metrics["before"], metrics["iteration_0"]):
        assert {"mAP", "top1", "top5", "top10", "mAP_rerank", "top1_rerank", "top5_rerank",
                "top10_rerank"} <= set(entry)
    assert "re-ranked: mAP" in (tmp_path / "log.txt").read_text()
    saved = torch.load(tmp_path / "checkpoint.pth.tar", weights_only=True)
    assert saved["config"] == CONFIG
