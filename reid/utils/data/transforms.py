"""Image transforms of the spec: source training, SSG training and test pipelines."""
from __future__ import annotations

import functools

import torch
from PIL import Image
from torch import Tensor
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The erased patch is filled with this constant (applied after normalisation, as in the paper's code).
ERASING_FILL = (0.4914, 0.4822, 0.4465)


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
    """Resize, optional random sized crop (area 0.64-1, height/width 2-3), flip, normalise, random erasing.

    :meth:`on_host` stops at the flipped uint8 image and the box that erasing draws; :meth:`on_device`
    normalises and erases.
    """

    def __init__(self, height: int, width: int, random_crop: bool = True):
        steps = [T.Resize((height, width))]
        if random_crop:
            # torchvision's ratio is width/height: a height/width aspect of 2-3 is a ratio of 1/3-1/2.
            steps.append(T.RandomResizedCrop((height, width), scale=(0.64, 1.0), ratio=(1 / 3, 1 / 2)))
        steps.append(T.RandomHorizontalFlip())
        self.geometry = T.Compose(steps)
        self.normalise = T.Compose(_normalise())
        self.erasing = T.RandomErasing(p=0.5, scale=(0.02, 0.2), ratio=(0.3, 1 / 0.3), value=ERASING_FILL)

    def __call__(self, image: Image.Image) -> Tensor:
        return self.erasing(self.normalise(self.geometry(image)))

    def on_host(self, image: Image.Image) -> tuple[Tensor, Tensor]:
        """The (3, H, W) uint8 image after resizing, cropping and flipping, and the box that random erasing
        fills, ``(top, left, height, width)``, of zero size when the image is not erased."""
        image = T.functional.pil_to_tensor(self.geometry(image))
        box = torch.zeros(4, dtype=torch.long)
        if torch.rand(1) < self.erasing.p:  # RandomErasing.forward's draws, in its order
            top, left, height, width, _ = self.erasing.get_params(
                image, scale=self.erasing.scale, ratio=self.erasing.ratio, value=list(ERASING_FILL))
            if (height, width) != tuple(image.shape[-2:]):  # the full-image box is get_params's "no erasing"
                box = torch.tensor([top, left, height, width])
        return image, box

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


def train_transform(height: int, width: int, random_crop: bool = True) -> TrainTransform:
    """The training pipeline. Source training and the SSG++ labelled loader crop; SSG's cluster loader does
    not (``random_crop=False``)."""
    return TrainTransform(height, width, random_crop)


def test_transform(height: int, width: int) -> EvalTransform:
    """The evaluation pipeline: resize and normalise."""
    return EvalTransform(height, width)
