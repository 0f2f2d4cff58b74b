"""A map-style dataset over ``(fname, pid, camid)`` items that names the file it cannot read."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from reid.utils.data.transforms import IMAGENET_MEAN
from reid.utils.errors import UserError

Item = tuple[str, int, int]

# Transparent pixels are shown on the ImageNet mean colour, which the input normalisation maps to zero: the
# network sees no signal there rather than whatever colour the file keeps under its transparent pixels.
ALPHA_BACKGROUND = tuple(round(255 * channel) for channel in IMAGENET_MEAN)


def read_image(fname: str) -> Image.Image:
    """Open an image as RGB, fully decoded, or raise UserError naming the file (:func:`to_rgb`)."""
    try:
        with Image.open(fname) as image:
            return to_rgb(image)
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise UserError(f"{fname}: cannot read image ({exc})") from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB: greyscale repeated on the three channels, 16-bit greyscale scaled to 8 bits (a
    plain conversion clips it, nearly white), and an image with transparency (RGBA, LA, PA, or a palette or
    colour key marked transparent) composited onto :data:`ALPHA_BACKGROUND`."""
    if image.mode.startswith("I"):  # 16-bit (or 32-bit integer) greyscale, e.g. a 16-bit PNG: 65535 -> 255
        levels = np.asarray(image, dtype=np.float64) / 257
        image = Image.fromarray(np.clip(np.round(levels), 0, 255).astype(np.uint8))
    if image.has_transparency_data:
        background = Image.new("RGBA", image.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


class Preprocessor(Dataset):
    """Returns ``(image, fname, label, camid, index)``.

    ``labels`` (one row per item, e.g. the (global, stripe...) pseudo-labels of SSG) replaces the item pids
    when given; a row is returned as a tensor so that a batch collates to (B, S+1).
    """

    def __init__(self, items: Sequence[Item], transform: Callable, labels: np.ndarray | None = None):
        self.items = list(items)
        self.transform = transform
        self.labels = None if labels is None else np.asarray(labels)
        if self.labels is not None and len(self.labels) != len(self.items):
            raise ValueError("labels must match items one to one")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        fname, pid, camid = self.items[index]
        label = pid if self.labels is None else torch.as_tensor(self.labels[index])
        return self.transform(read_image(fname)), fname, label, camid, index
