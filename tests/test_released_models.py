"""The authors' released source models load in every script (issue: "The authors' released source models load")."""
import json

import pytest
import torch

import selftraining
import semitraining
import source_train
from reid import models
from reid.utils.errors import UserError
from reid.utils.runtime import run_main
from reid.utils.serialization import load_checkpoint, load_model_weights
from tests.released_checkpoint import write_released_checkpoint

TINY_RESNET50 = ["-a", "resnet50", "--height", "64", "--width", "32", "--workers", "0", "--print-freq", "100"]


@pytest.mark.parametrize(("num_classes", "pytorch", "python"),
                         [(702, "0.4.1", 3), (751, "0.4.1", 2), (702, "0.4.0", 3), (751, "0.4.0", 2)])
def test_every_file_the_release_could_have_written_loads_into_the_adaptation_model(tmp_path, num_classes, pytorch,
                                                                                   python):
    path = tmp_path / "released.pth.tar"
    written = write_released_checkpoint(path, num_classes, pytorch=pytorch, python=python)
    if python == 2:  # byte strings that are not UTF-8: PyTorch's default reading fails
        with pytest.raises(UnicodeDecodeError):
            torch.load(path, weights_only=False)
    checkpoint = load_checkpoint(str(path))
    assert float(checkpoint["best_top1"]) == pytest.approx(0.808) and checkpoint["epoch"] == 150
    model = models.create("resnet50", num_split=2, num_features=2048, pretrained=False)
    tracked = [key for key in model.state_dict() if key.endswith("num_batches_tracked")]
    assert len(tracked) == 54 and (f"module.{tracked[0]}" in written) == (pytorch == "0.4.1")
    for key in tracked:
        model.state_dict()[key].fill_(7)
    load_model_weights(model, checkpoint["state_dict"], str(path))
    for key, value in model.state_dict().items():
        assert torch.equal(value, written.get(f"module.{key}", torch.tensor(0))), key


def test_a_python2_file_missing_a_weight_names_it_in_one_line(tmp_path):
    path = tmp_path / "released.pth.tar"
    write_released_checkpoint(path, 702, pytorch="0.4.0", python=2)
    checkpoint = load_checkpoint(str(path))
    del checkpoint["state_dict"]["module.base.layer4.2.bn3.running_var"]
    model = models.create("resnet50", num_split=2, num_features=2048, pretrained=False)
    with pytest.raises(UserError, match=r"do not fit this model \(missing \['base.layer4.2.bn3.running_var'\]\)"):
        load_model_weights(model, checkpoint["state_dict"], str(path))


def test_a_model_with_a_classifier_names_the_missing_head(tmp_path):
    path = tmp_path / "released.pth.tar"
    write_released_checkpoint(path, 751)
    model = models.create("resnet50", num_split=2, num_features=2048, num_classes=751, pretrained=False)
    with pytest.raises(Exception, match=r"missing \['classifier.weight'"):
        load_model_weights(model, load_checkpoint(str(path))["state_dict"], str(path), drop_classifier=False)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    path = tmp_path_factory.mktemp("released") / "dukemtmc_trained.pth.tar"
    write_released_checkpoint(path, 702, pytorch="0.4.0", python=2)  # the file hardest to read
    return path


@pytest.mark.slow
def test_source_train_evaluates_a_released_model(tiny_pair, released, tmp_path):
    argv = ["--dataset", "synth_a", "--data_dir", str(tiny_pair), "--logs_dir", str(tmp_path), "--resume",
            str(released), "--evaluate", *TINY_RESNET50]
    assert run_main(source_train.main, argv) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 <= metrics["test_synth_a"]["mAP"] <= 100


@pytest.mark.slow
@pytest.mark.parametrize("script", [selftraining, semitraining])
def test_adaptation_starts_from_a_released_model(tiny_pair, released, tmp_path, script):
    argv = ["--src_dataset", "synth_a", "--tgt_dataset", "synth_b", "--data_dir", str(tiny_pair), "--logs_dir",
            str(tmp_path), "--resume", str(released), "--iteration", "1", "--epochs", "1", "-b", "16",
            "--bn-group-size", "8", "--num-instances", "4", "--rho", "0.05", *TINY_RESNET50]
    if script is semitraining:
        argv += ["--label-iteration", "0"]
    assert run_main(script.main, argv) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics) == ["run", "before", "iteration_0"]
