"""The training transforms: the released crop and erasing draws (against a reference spelled out from
docs/algorithm.md, "Source training"), the SSG++ crop of the raw image, and the split between a data worker and
the GPU bit for bit."""
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from reid.utils.data import transforms
from reid.utils.data.transforms import (
    CROPS,
    ERASING_FILL,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RANDOM_ERASING,
    RECT_CROP,
    train_transform,
)

# The released parameters, written out again: area fraction, height/width ratio, attempts, strictly smaller.
SPEC = {"crop": ((0.64, 1.0), (2.0, 3.0), 10, False), "erasing": ((0.02, 0.2), (0.3, 1 / 0.3), 100, True)}
SAMPLERS = {"crop": RECT_CROP, "erasing": RANDOM_ERASING}


def random_image(rng, height, width):
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def spec_uniform(low, high):
    return low + (high - low) * torch.rand((), dtype=torch.float64).item()


def reference_box(name, height, width):
    """The released box, one formula per line, on torch's generator: per attempt the area fraction then the ratio,
    then the corner of the first box that fits."""
    area_range, ratio_range, attempts, strict = SPEC[name]
    for _ in range(attempts):
        area = spec_uniform(*area_range) * height * width
        ratio = spec_uniform(*ratio_range)
        box_height = int(round(math.sqrt(area * ratio)))
        box_width = int(round(math.sqrt(area / ratio)))
        fits = box_height < height and box_width < width if strict else box_height <= height and box_width <= width
        if fits:
            top = int(torch.randint(0, height - box_height + 1, ()).item())
            left = int(torch.randint(0, width - box_width + 1, ()).item())
            return top, left, box_height, box_width
    return None


@pytest.mark.parametrize("name", ["crop", "erasing"])
def test_boxes_equal_the_spec_reference_and_draw_as_many_numbers(name):
    sizes = [(256, 128), (128, 64), (250, 100), (300, 90), (60, 30), (100, 100), (1, 100), (20, 7)]
    outcomes = set()
    for seed in range(300):
        height, width = sizes[seed % len(sizes)]
        torch.manual_seed(seed)
        box = SAMPLERS[name](height, width)
        after = torch.rand(())
        torch.manual_seed(seed)
        assert box == reference_box(name, height, width), (seed, height, width)
        assert torch.equal(torch.rand(()), after)
        outcomes.add("none" if box is None else "full" if box[2:] == (height, width) else "box")
    assert outcomes == ({"none", "box", "full"} if name == "crop" else {"none", "box"})


def test_a_box_may_fill_the_image_for_the_crop_and_never_for_erasing():
    assert RECT_CROP.fits(256, 128, 256, 128) and RECT_CROP.fits(250, 128, 256, 128)
    assert not RANDOM_ERASING.fits(256, 127, 256, 128) and not RANDOM_ERASING.fits(255, 128, 256, 128)
    assert RANDOM_ERASING.fits(255, 127, 256, 128)


@pytest.mark.parametrize(("name", "size", "attempts"), [("crop", (100, 100), 10), ("erasing", (1, 100), 100)])
def test_when_no_box_fits_every_attempt_is_drawn(name, size, attempts):
    """A square image fits no box 2-3 times as high as wide; a one-row image no erasing box of at least
    0.02 x 100 pixels. Each attempt draws two numbers: 10 attempts for the crop, 100 for erasing."""
    torch.manual_seed(0)
    assert SAMPLERS[name](*size) is None
    after = torch.rand(())
    torch.manual_seed(0)
    for _ in range(2 * attempts):
        torch.rand((), dtype=torch.float64)
    assert torch.equal(torch.rand(()), after)


@pytest.mark.parametrize("name", ["crop", "erasing"])
def test_area_and_ratio_are_drawn_uniformly_and_a_log_uniform_draw_fails_the_same_test(name):
    area_range, ratio_range, _, _ = SPEC[name]
    torch.manual_seed(0)
    draws = np.array([SAMPLERS[name].draw() for _ in range(4000)])
    log_uniform = np.random.default_rng(0).uniform(size=(4000, 2))
    for column, (low, high) in enumerate((area_range, ratio_range)):
        assert draws[:, column].min() >= low and draws[:, column].max() <= high
        assert stats.kstest(draws[:, column], "uniform", args=(low, high - low)).pvalue > 0.01
        torchvision_like = np.exp(np.log(low) + (np.log(high) - np.log(low)) * log_uniform[:, column])
        assert stats.kstest(torchvision_like, "uniform", args=(low, high - low)).pvalue < 1e-6


def test_erased_boxes_on_a_large_image_have_uniform_area_and_ratio():
    """On 1000 x 1000 pixels every first attempt fits: the boxes show the draws, up to rounding."""
    torch.manual_seed(1)
    boxes = np.array([RANDOM_ERASING(1000, 1000) for _ in range(4000)], dtype=float)
    ratio, area = boxes[:, 2] / boxes[:, 3], boxes[:, 2] * boxes[:, 3] / 1e6
    assert stats.kstest(ratio, "uniform", args=(0.3, 1 / 0.3 - 0.3)).pvalue > 0.01
    assert stats.kstest(area, "uniform", args=(0.02, 0.18)).pvalue > 0.01
    assert stats.kstest(np.log(ratio), "uniform", args=(np.log(0.3), -2 * np.log(0.3))).pvalue < 1e-6


def reference_pipeline(image, crop, height, width):
    """Spec sections 3 and 5 spelled out on PIL and numpy: where the crop happens, flip, ToTensor, normalise,
    erase with the fill in normalised units."""
    if crop != "raw":
        image = image.resize((width, height), Image.BILINEAR)
    if crop != "none":
        box = reference_box("crop", image.height, image.width)
        if box is not None:
            top, left, box_height, box_width = box
            image = image.crop((left, top, left + box_width, top + box_height))
        image = image.resize((width, height), Image.BILINEAR)
    if torch.rand(1) < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255
    normalised = (pixels - np.array(IMAGENET_MEAN, np.float32)[:, None, None]) / np.array(IMAGENET_STD,
                                                                                        np.float32)[:, None, None]
    if torch.rand(()).item() < 0.5:
        box = reference_box("erasing", height, width)
        if box is not None:
            top, left, box_height, box_width = box
            normalised[:, top:top + box_height, left:left + box_width] = np.array(ERASING_FILL)[:, None, None]
    return torch.from_numpy(normalised)


@pytest.mark.parametrize("crop", CROPS)
def test_each_pipeline_equals_the_spec_reference(crop):
    """Source training crops the resized image, SSG++'s labelled loader the raw one (a 250 x 100 Duke-sized
    image is not 2:1, so the two give other boxes), SSG's cluster loader not at all."""
    rng = np.random.default_rng(3)
    transform = train_transform(64, 32, crop=crop)
    fill = torch.tensor(ERASING_FILL).view(3, 1, 1)
    filled = 0
    for seed in range(30):
        image = random_image(rng, *[(250, 100), (128, 64), (90, 60)][seed % 3])
        torch.manual_seed(seed)
        expected = reference_pipeline(image, crop, 64, 32)
        torch.manual_seed(seed)
        produced = transform(image)
        assert produced.shape == (3, 64, 32)
        torch.testing.assert_close(produced, expected, rtol=0, atol=1e-6)
        filled += int(torch.any(torch.all(produced == fill, dim=0)))
    assert 5 < filled < 25


@pytest.mark.parametrize("crop", CROPS)
def test_host_then_device_halves_equal_the_whole_transform_bit_for_bit(crop):
    rng = np.random.default_rng(0)
    transform = train_transform(64, 32, crop=crop)
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
