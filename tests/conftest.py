"""Shared fixtures: a tiny synthetic source/target pair generated once per test session, and a random model to
adapt from."""
import pytest
import torch

from reid import models
from reid.datasets.synthetic import generate
from reid.utils.serialization import save_checkpoint

# 40 test identities: enough strangers that an untrained network's colour features rank them poorly (mAP about
# 55), so that source training's gain is measured far from the ceiling.
TINY = dict(num_train_ids=32, num_test_ids=40, num_cameras=3, images_per_camera=(2, 3))


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """``data_dir`` holding small ``synth_a`` and ``synth_b`` folders."""
    data_dir = tmp_path_factory.mktemp("data")
    for domain in ("synth_a", "synth_b"):
        generate(str(data_dir / domain), domain, **TINY)
    return data_dir


@pytest.fixture(scope="session")
def source_checkpoint(tmp_path_factory):
    """A random ResNet-18 (32 features, two stripes) saved as a source model for the torchrun runs."""
    source = tmp_path_factory.mktemp("source") / "source.pth.tar"
    torch.manual_seed(0)
    model = models.create("resnet18", num_split=2, num_features=32, pretrained=False)
    save_checkpoint({"state_dict": model.state_dict(), "epoch": 1}, str(source))
    return source
