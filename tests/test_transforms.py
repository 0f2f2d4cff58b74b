"""The training transform split between a data worker and the GPU gives the whole transform's values."""
import numpy as np
import pytest
import torch
from PIL import Image

from reid.utils.data import transforms
from reid.utils.data.transforms import ERASING_FILL, train_transform


def random_image(rng, height, width):
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("random_crop", [False, True])
def test_host_then_device_halves_equal_the_whole_transform_bit_for_bit(random_crop):
    rng = np.random.default_rng(0)
    transform = train_transform(64, 32, random_crop=random_crop)
    erased = 0
    for seed in range(40):
        image = random_image(rng, *[(128, 64), (250, 100), (60, 30)][seed % 3])  # Market, Duke, smaller
        torch.manual_seed(seed)
        whole = transform(image)
        next_draw = torch.rand(1)
        torch.manual_seed(seed)
        pixels, box = transform.on_host(image)
        assert torch.equal(torch.rand(1), next_draw)  # as many random numbers drawn: the next image agrees too
        assert pixels.dtype == torch.uint8 and pixels.shape == (3, 64, 32)
        finished = transform.on_device(pixels[None], box[None])[0]
        assert torch.equal(finished, whole)
        top, left, height, width = box.tolist()
        if height:
            erased += 1
            patch = finished[:, top:top + height, left:left + width]
            assert torch.equal(patch, torch.tensor(ERASING_FILL).view(3, 1, 1).expand_as(patch))
    assert 10 < erased < 30  # p = 0.5: both branches ran


def test_a_batch_is_finished_image_by_image():
    rng = np.random.default_rng(1)
    transform = train_transform(64, 32)
    torch.manual_seed(5)
    halves = [transform.on_host(random_image(rng, 128, 64)) for _ in range(6)]
    batch = transform.on_device(torch.stack([p for p, _ in halves]), torch.stack([b for _, b in halves]))
    for row, (pixels, box) in zip(batch, halves):
        assert torch.equal(row, transform.on_device(pixels[None], box[None])[0])


def test_the_evaluation_transforms_halves_equal_it_bit_for_bit():
    rng = np.random.default_rng(2)
    transform = transforms.test_transform(256, 128)
    images = [random_image(rng, *size) for size in [(128, 64), (250, 100), (300, 90)]]
    pixels = torch.stack([transform.on_host(image) for image in images])
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 3, 256, 128)
    assert torch.equal(transform.on_device(pixels), torch.stack([transform(image) for image in images]))
