"""A map-style dataset over ``(fname, pid, camid)`` items that names the file it cannot read, and the check that
names every unreadable image of a list at once."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from reid.utils.data.transforms import IMAGENET_MEAN
from reid.utils.errors import UserError

Item = tuple[str, int, int]
"""One image: absolute file name, person id, 0-based camera id."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def is_image(fname: str) -> bool:
    """Whether ``fname`` has an image extension (case-insensitive)."""
    return fname.lower().endswith(IMAGE_EXTENSIONS)

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


class _ReadCheck(Dataset):
    """Decodes each image once and returns why it cannot be read ('' when it can)."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> str:
        try:
            read_image(self.paths[index])
        except UserError as exc:
            return str(exc)
        return ""


def unreadable_images(paths: Sequence[str], workers: int) -> dict[str, str]:
    """Every image of ``paths`` that does not decode, with the line :func:`read_image` raises for it, in the
    order of ``paths``; each image is decoded once, by ``workers`` loader processes."""
    loader = DataLoader(_ReadCheck(paths), batch_size=64, num_workers=workers, collate_fn=list)
    problems = [problem for batch in loader for problem in batch]
    return {path: problem for path, problem in zip(paths, problems) if problem}
