"""Checkpoints: atomic writes, the authors' released format, and one-line errors for bad files."""
import os

import numpy as np
import pytest
import torch

from reid import models
from reid.utils.errors import UserError
from reid.utils.serialization import load_checkpoint, load_model_weights, save_checkpoint


@pytest.fixture(scope="module")
def model():
    return models.create("resnet18", num_split=2, num_features=64, num_classes=0, pretrained=False)


def released_style(model, num_classes=751):
    """A checkpoint shaped like the authors' PyTorch 0.4 files: DataParallel prefixes, the ImageNet fc of the
    backbone, a classifier, and numpy scalars beside the weights."""
    state = {f"module.{k}": v.clone() + 1 for k, v in model.state_dict().items()}
    state["module.base.fc.weight"] = torch.zeros(1000, 512)
    state["module.classifier.weight"] = torch.zeros(num_classes, 64)
    state["module.classifier.bias"] = torch.zeros(num_classes)
    return {"state_dict": state, "epoch": np.int64(50), "best_top1": np.float64(0.808)}


def test_round_trip_and_best_copy(tmp_path, model):
    path = tmp_path / "checkpoint.pth.tar"
    save_checkpoint({"state_dict": model.state_dict(), "epoch": 3}, str(path), is_best=True)
    loaded = load_checkpoint(str(path))
    assert loaded["epoch"] == 3
    assert torch.equal(loaded["state_dict"]["feat.weight"], model.state_dict()["feat.weight"])
    assert (tmp_path / "model_best.pth.tar").exists()
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pth.tar", "model_best.pth.tar"]


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, model, monkeypatch):
    path = str(tmp_path / "checkpoint.pth.tar")
    save_checkpoint({"state_dict": model.state_dict(), "epoch": 1}, path)

    def dies_half_way(obj, stream):
        stream.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"state_dict": model.state_dict(), "epoch": 2}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["checkpoint.pth.tar"]


def test_released_checkpoint_loads_with_prefixes_classifier_and_numpy_scalars(tmp_path, model):
    path = str(tmp_path / "market1501_trained.pth.tar")
    torch.save(released_style(model), path)
    checkpoint = load_checkpoint(path)
    assert float(checkpoint["best_top1"]) == pytest.approx(0.808)
    fresh = models.create("resnet18", num_split=2, num_features=64, pretrained=False)
    load_model_weights(fresh, checkpoint["state_dict"], path)
    expected = model.state_dict()["base.conv1.weight"] + 1
    assert torch.equal(fresh.state_dict()["base.conv1.weight"], expected)


def test_batches_tracked_are_filled_only_for_a_file_that_has_none(model):
    """PyTorch 0.4.0 wrote no num_batches_tracked; a file lacking only some of them lost weights."""
    state = released_style(model)["state_dict"]
    tracked = [key for key in state if key.endswith("num_batches_tracked")]
    assert len(tracked) == 21
    fresh = models.create("resnet18", num_split=2, num_features=64, pretrained=False)
    fresh.state_dict()[tracked[0][len("module."):]].fill_(5)
    load_model_weights(fresh, {k: v for k, v in state.items() if k not in tracked}, "0.4.0.pth.tar")
    assert all(fresh.state_dict()[key[len("module."):]].item() == 0 for key in tracked)
    assert torch.equal(fresh.state_dict()["feat_bn.running_var"], state["module.feat_bn.running_var"])
    with pytest.raises(UserError, match=r"missing \['base.layer1.0.bn2.num_batches_tracked'\]\)"):
        load_model_weights(fresh, {k: v for k, v in state.items() if k != tracked[2]}, "damaged.pth.tar")


def test_classifier_kept_when_the_model_has_one(tmp_path, model):
    with_classifier = models.create("resnet18", num_split=2, num_features=64, num_classes=751, pretrained=False)
    state = released_style(model)["state_dict"]
    state["module.classifier.weight"] = torch.full((751, 64), 0.5)
    load_model_weights(with_classifier, state, "ckpt", drop_classifier=False)
    assert torch.all(with_classifier.classifier.weight == 0.5)


@pytest.mark.parametrize("content, message", [
    (b"", "not a readable checkpoint"),
    (b"hello, I am a text file\n", "not a readable checkpoint"),
])
def test_unreadable_files(tmp_path, content, message):
    path = tmp_path / "bad.pth.tar"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        load_checkpoint(str(path))


def test_truncated_checkpoint(tmp_path, model):
    path = tmp_path / "checkpoint.pth.tar"
    save_checkpoint({"state_dict": model.state_dict()}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(str(path))


def test_pickle_without_state_dict(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"weights": [1, 2, 3]}, path)
    with pytest.raises(UserError, match="not a checkpoint"):
        load_checkpoint(str(path))


def test_other_architecture_is_refused(tmp_path, model):
    resnet34 = models.create("resnet34", num_split=2, num_features=64, pretrained=False)
    with pytest.raises(UserError, match="do not fit this model"):
        load_model_weights(resnet34, model.state_dict(), "resnet18.pth.tar")


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        load_checkpoint(str(tmp_path / "nope.pth.tar"))
