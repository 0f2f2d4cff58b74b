"""Shared fixtures: a tiny synthetic source/target pair generated once per test session."""
import pytest

from reid.datasets.synthetic import generate

TINY = dict(num_train_ids=32, num_test_ids=16, num_cameras=3, images_per_camera=(2, 3))


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """``data_dir`` holding small ``synth_a`` and ``synth_b`` folders."""
    data_dir = tmp_path_factory.mktemp("data")
    for domain in ("synth_a", "synth_b"):
        generate(str(data_dir / domain), domain, **TINY)
    return data_dir
