"""The released image transforms (docs/algorithm.md): source training, SSG training, SSG++'s labelled set, tests.

The random sized rect crop and random erasing are the released code's: their area fraction and height/width
ratio are drawn uniformly (torchvision's ``RandomResizedCrop`` and ``RandomErasing`` draw the ratio
log-uniformly, and erase after 10 attempts at most, not 100). Every random number comes from torch's default
generator, so ``--seed`` and the DataLoader's per-worker seeds make the augmentations reproducible.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import torch
from PIL import Image
from torch import Tensor
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The erased patch is filled with this constant (applied after normalisation, as in the paper's code).
ERASING_FILL = (0.4914, 0.4822, 0.4465)
ERASING_PROBABILITY = 0.5
# Where the random sized rect crop happens: nowhere (SSG's cluster loader), on the image already resized to the
# model's input (source training), or on the raw image, before any resize (SSG++'s labelled loader).
Crop = Literal["none", "resized", "raw"]
CROPS: tuple[str, ...] = ("none", "resized", "raw")
Box = tuple[int, int, int, int]  # top, left, height, width


def uniform(low: float, high: float) -> float:
    """A draw from U(low, high) on torch's default generator."""
    return low + (high - low) * torch.rand((), dtype=torch.float64).item()


def randint(low: int, high: int) -> int:
    """A uniform integer of [low, high], both ends included, on torch's default generator."""
    return int(torch.randint(low, high + 1, ()).item())


@dataclass(frozen=True)
class RectSampler:
    """A random rectangle of an H x W image, the way the released crop and erasing draw theirs.

    Up to ``attempts`` times: an area fraction ``f ~ U(area)`` and a height/width ratio ``r ~ U(ratio)``, both
    uniform; with ``A = f H W`` the box is ``h = round(sqrt(A r))`` by ``w = round(sqrt(A / r))``. The first box
    that fits the image (``h <= H and w <= W``; strictly smaller when ``strict``, as erasing asks) gets a
    uniform corner. None when no attempt fits.
    """

    area: tuple[float, float]
    ratio: tuple[float, float]
    attempts: int
    strict: bool

    def draw(self) -> tuple[float, float]:
        """One attempt's area fraction and height/width ratio."""
        return uniform(*self.area), uniform(*self.ratio)

    def fits(self, box_height: int, box_width: int, height: int, width: int) -> bool:
        if self.strict:
            return box_height < height and box_width < width
        return box_height <= height and box_width <= width

    def __call__(self, height: int, width: int) -> Box | None:
        for _ in range(self.attempts):
            fraction, ratio = self.draw()
            area = fraction * height * width
            box_height, box_width = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if self.fits(box_height, box_width, height, width):
                return randint(0, height - box_height), randint(0, width - box_width), box_height, box_width
        return None


RECT_CROP = RectSampler(area=(0.64, 1.0), ratio=(2.0, 3.0), attempts=10, strict=False)
RANDOM_ERASING = RectSampler(area=(0.02, 0.2), ratio=(0.3, 1 / 0.3), attempts=100, strict=True)


def _normalise() -> list:
    return [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


class SplitTransform:
    """A transform a GPU can take the second half of.

    Called on a PIL image it runs whole. :meth:`on_host` stops at the uint8 image (and what it drew at
    random), :meth:`on_device` converts, normalises and finishes a batch of those on the GPU. The halves draw
    the same random numbers, in the same order, as the whole and give the same values bit for bit; a data
    worker then does less and hands over a quarter of the bytes.
    """

    def __call__(self, image: Image.Image) -> Tensor:
        raise NotImplementedError

    def on_host(self, image: Image.Image) -> Tensor | tuple[Tensor, ...]:
        raise NotImplementedError

    @staticmethod
    def on_device(images: Tensor, *drawn: Tensor) -> Tensor:
        raise NotImplementedError


class TrainTransform(SplitTransform):
    """The released training pipeline: the random sized rect crop where ``crop`` says (its fallback, when no
    attempt fits, a plain resize), then the model's input size, flip, normalise and random erasing.

    ``crop="resized"`` (source training): resize, crop, resize back. ``"raw"`` (SSG++'s labelled loader): crop
    the image as read, then resize. ``"none"`` (SSG's cluster loader): resize only.
    :meth:`on_host` stops at the flipped uint8 image and the box that erasing draws; :meth:`on_device`
    normalises and erases.
    """

    def __init__(self, height: int, width: int, crop: Crop = "resized"):
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        self.size = (height, width)
        self.crop = crop
        self.resize = T.Resize(self.size, interpolation=InterpolationMode.BILINEAR)
        self.flip = T.RandomHorizontalFlip()
        self.normalise = T.Compose(_normalise())

    def geometry(self, image: Image.Image) -> Image.Image:
        """The image at the model's input size, cropped (where ``crop`` says) and flipped."""
        if self.crop != "raw":
            image = self.resize(image)
        if self.crop != "none":
            image = self.rect_crop(image)
        return self.flip(image)

    def rect_crop(self, image: Image.Image) -> Image.Image:
        box = RECT_CROP(image.height, image.width)
        if box is None:
            return self.resize(image)
        return T.functional.resized_crop(image, *box, list(self.size), InterpolationMode.BILINEAR)

    def erasing_box(self) -> Box | None:
        """The box random erasing fills in a ``size`` image, None when this image is not erased."""
        if torch.rand(()).item() >= ERASING_PROBABILITY:
            return None
        return RANDOM_ERASING(*self.size)

    def __call__(self, image: Image.Image) -> Tensor:
        tensor = self.normalise(self.geometry(image))
        box = self.erasing_box()
        if box is not None:
            top, left, height, width = box
            tensor[:, top:top + height, left:left + width] = _device_constants(tensor.device)[3][0]
        return tensor

    def on_host(self, image: Image.Image) -> tuple[Tensor, Tensor]:
        """The (3, H, W) uint8 image after resizing, cropping and flipping, and the box that random erasing
        fills, ``(top, left, height, width)``, of zero size when the image is not erased."""
        image = T.functional.pil_to_tensor(self.geometry(image))
        box = self.erasing_box()
        return image, torch.tensor(box if box is not None else (0, 0, 0, 0), dtype=torch.long)

    @staticmethod
    def on_device(images: Tensor, boxes: Tensor) -> Tensor:
        """Float images, normalised and erased, from (B, 3, H, W) uint8 images and (B, 4) boxes of
        :meth:`on_host`, on the device they are on."""
        fill = _device_constants(images.device)[3]
        top, left, height, width = (boxes[:, k].view(-1, 1, 1, 1) for k in range(4))
        rows = torch.arange(images.shape[2], device=images.device).view(1, 1, -1, 1)
        columns = torch.arange(images.shape[3], device=images.device).view(1, 1, 1, -1)
        erased = (rows >= top) & (rows < top + height) & (columns >= left) & (columns < left + width)
        return torch.where(erased, fill, _normalise_on_device(images))


class EvalTransform(SplitTransform):
    """Resize and normalise. :meth:`on_host` stops at the resized uint8 image."""

    def __init__(self, height: int, width: int):
        self.resize = T.Resize((height, width))
        self.normalise = T.Compose(_normalise())

    def __call__(self, image: Image.Image) -> Tensor:
        return self.normalise(self.resize(image))

    def on_host(self, image: Image.Image) -> Tensor:
        return T.functional.pil_to_tensor(self.resize(image))

    @staticmethod
    def on_device(images: Tensor) -> Tensor:
        return _normalise_on_device(images)


def _normalise_on_device(images: Tensor) -> Tensor:
    """What ``ToTensor`` and ``Normalize`` make of (B, 3, H, W) uint8 images, on their device."""
    scale, mean, std, _ = _device_constants(images.device)
    return images.float().div(scale).sub(mean).div(std)


@functools.cache
def _device_constants(device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """255, the mean, the std and the erasing fill as (1, C, 1, 1) tensors on ``device``, made once: making a
    tensor from Python numbers is a copy that waits. Tensors, not numbers, also because CUDA divides by a
    number as a product with its reciprocal, which may round differently from ToTensor's division."""
    return tuple(torch.tensor(values, device=device).view(1, -1, 1, 1)
                 for values in ((255.0,), IMAGENET_MEAN, IMAGENET_STD, ERASING_FILL))


def train_transform(height: int, width: int, crop: Crop = "resized") -> TrainTransform:
    """The training pipeline: source training crops the resized image (the default), SSG++'s labelled loader
    the raw image (``crop="raw"``), SSG's cluster loader nothing (``crop="none"``)."""
    return TrainTransform(height, width, crop)


def test_transform(height: int, width: int) -> EvalTransform:
    """The evaluation pipeline: resize and normalise."""
    return EvalTransform(height, width)
