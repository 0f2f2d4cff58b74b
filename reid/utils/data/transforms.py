"""Image transforms of the spec: source training, SSG training and test pipelines."""
from __future__ import annotations

from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The erased patch is filled with this constant (applied after normalisation, as in the paper's code).
ERASING_FILL = (0.4914, 0.4822, 0.4465)


def _normalise() -> list:
    return [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def _erasing() -> T.RandomErasing:
    return T.RandomErasing(p=0.5, scale=(0.02, 0.2), ratio=(0.3, 1 / 0.3), value=ERASING_FILL)


def train_transform(height: int, width: int, random_crop: bool = True) -> T.Compose:
    """Resize, optional random sized crop (area 0.64-1, height/width 2-3), flip, normalise, random erasing.

    Source training and the SSG++ labelled loader crop; SSG's cluster loader does not (``random_crop=False``).
    """
    steps = [T.Resize((height, width))]
    if random_crop:
        # torchvision's ratio is width/height: a height/width aspect of 2-3 is a ratio of 1/3-1/2.
        steps.append(T.RandomResizedCrop((height, width), scale=(0.64, 1.0), ratio=(1 / 3, 1 / 2)))
    steps.append(T.RandomHorizontalFlip())
    return T.Compose(steps + _normalise() + [_erasing()])


def test_transform(height: int, width: int) -> T.Compose:
    """Resize and normalise."""
    return T.Compose([T.Resize((height, width))] + _normalise())
