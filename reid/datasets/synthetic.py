"""Synthetic two-domain person re-ID data: the project's built-in demo, since no benchmark can be downloaded.

A seeded generator draws pedestrian-like 128x64 crops (the Market-1501 crop size) and writes them in the
Market-1501 layout and naming (``bounding_box_train/``, ``bounding_box_test/``, ``query/``,
``PPPP_cCsS_FFFFFF_NN.jpg``), so the Market-1501 loader reads them. There are two domains, ``synth_a`` and
``synth_b``, with different people and a different look (:class:`DomainStyle`): clothing palette, lighting,
per-camera colour casts, background clutter, sensor noise and blur. That gap is what unsupervised domain
adaptation (SSG) has to bridge.

An identity is an upper garment and a lower garment (colour and pattern: plain, horizontal stripes,
vertical stripes, checks), skin, hair, shoes, build and an optional bag. Garments come from a pool smaller
than the number of people, so several people share an upper garment but not the lower one and the other
way round: only the combination of the upper-body and lower-body parts tells them apart, as in SSG's
part-based grouping.

Per domain folder: every identity is seen by 2..4 cameras (seeded), training and test identities are
disjoint, the query holds one image per (test identity, camera), the gallery the other test images plus
distractors (pid 0: background or a passer-by's fragment) and junk (pid -1: a badly cropped test person).
The domains' sizes differ (:data:`DOMAIN_SIZES`): the source ``synth_a`` has 150 training identities with 2..4
images per camera (about 9 per identity), the target ``synth_b`` 80 with 4..7 (about 17, Market-1501's 17.2).
``synth_meta.json`` is written last; a folder holding it is reused as is, one written by an older format
is refused.

Run ``python -m reid.datasets.synthetic --root DIR --domain synth_a`` to generate a domain by hand.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from reid.datasets.base import MARKET_STYLE_FOLDERS
from reid.datasets.market1501 import Market1501
from reid.utils.errors import UserError

# 2: synth_b's size changed (80 training identities of about 17 images).
FORMAT_VERSION = 2
MARKER = "synth_meta.json"
DOMAINS = ("synth_a", "synth_b")
HEIGHT, WIDTH = 128, 64
CAMERAS_PER_IDENTITY = (2, 4)
JPEG_QUALITY = 90
OCCLUSION_PROBABILITY = 0.15
# Pool size / number of people: below 1 so that garments are shared between identities.
GARMENT_POOL_RATIO = 0.5
# Identities and images per camera of each domain. The target sees each person as often as Market-1501
# (17.2 images per identity; DukeMTMC-reID 23.5): SSG's DBSCAN (min_samples 4) groups an identity only when it
# has several close images, and SSG++ labels one image per group, so a sparser target leaves most of its people
# without a label (about 9 images per identity left 69 of 150 unlabelled and capped the propagated labels'
# accuracy near 57%, issue 10).
DOMAIN_SIZES = {
    "synth_a": {"num_train_ids": 150, "num_test_ids": 100, "images_per_camera": (2, 4)},
    "synth_b": {"num_train_ids": 80, "num_test_ids": 60, "images_per_camera": (4, 7)},
}
# Mixed into every seed so that the two domains never hold the same people.
_DOMAIN_ENTROPY = {"synth_a": 1501, "synth_b": 1812}
_TRAIN_FOLDER, _TEST_FOLDER, _QUERY_FOLDER = MARKET_STYLE_FOLDERS
# The scene of a camera is larger than a crop so that each image sees a slightly shifted background.
_SCENE_MARGIN_Y, _SCENE_MARGIN_X = 10, 8
_ROWS = np.arange(HEIGHT)[:, None]
_COLS = np.arange(WIDTH)[None, :]


@dataclass(frozen=True)
class DomainStyle:
    """How a synthetic domain looks. Every field is a number so that two styles can be blended.

    Attributes
    ----------
    hue_shift : float
        Added to every clothing hue, as a fraction of the colour wheel.
    saturation : float
        Multiplies every clothing saturation (below 1: a washed-out palette).
    brightness : float
        Global gain of the rendered image.
    gamma : float
        Exponent applied after the gain (above 1 darkens the mid-tones).
    lighting_jitter : float
        Each image's gain varies by up to this fraction.
    camera_cast : float
        Each camera multiplies each colour channel by a factor drawn in ``1 +- camera_cast``.
    clutter : float
        0: flat walls with a gradient; 1: textured walls with boxes, posters and windows.
    noise : float
        Standard deviation of the Gaussian sensor noise, in grey levels.
    blur : float
        Mean radius of the Gaussian blur, in pixels.
    """

    hue_shift: float
    saturation: float
    brightness: float
    gamma: float
    lighting_jitter: float
    camera_cast: float
    clutter: float
    noise: float
    blur: float

    def towards(self, other: DomainStyle, amount: float) -> DomainStyle:
        """The style ``amount`` of the way from this one to ``other`` (0: this one, 1: ``other``)."""
        return DomainStyle(
            **{
                field.name: (1 - amount) * getattr(self, field.name) + amount * getattr(other, field.name)
                for field in fields(self)
            }
        )


# Both domains have camera colour casts, as real camera networks do, so that a source model learns some
# invariance to them; the domains differ in palette, lighting, background, noise and blur.
STYLE_A = DomainStyle(
    hue_shift=0.0, saturation=1.0, brightness=1.0, gamma=1.0, lighting_jitter=0.12,
    camera_cast=0.12, clutter=0.0, noise=2.0, blur=0.3,
)
STYLE_B = DomainStyle(
    hue_shift=0.07, saturation=0.55, brightness=0.85, gamma=1.25, lighting_jitter=0.15,
    camera_cast=0.15, clutter=1.0, noise=6.0, blur=0.9,
)


def domain_style(domain: str, shift: float = 1.0) -> DomainStyle:
    """The style of ``domain``.

    ``synth_a`` is the reference look. ``synth_b`` lies ``shift`` of the way from it to :data:`STYLE_B`:
    0 renders B's people in A's style, 1 is the default gap, above 1 widens it.

    Raises
    ------
    UserError
        For an unknown domain or a negative shift.
    """
    if domain not in DOMAINS:
        raise UserError(f"unknown synthetic domain {domain!r}: expected one of {', '.join(DOMAINS)}")
    if shift < 0:
        raise UserError(f"shift: expected a number >= 0, got {shift}")
    return STYLE_A if domain == "synth_a" else STYLE_A.towards(STYLE_B, shift)


# Base colours (RGB): a garment jitters one of them, then the domain shifts its hue and saturation.
_CLOTHING_PALETTE = (
    (30, 30, 35), (230, 230, 225), (128, 128, 130), (30, 40, 90), (40, 90, 200), (190, 30, 40),
    (40, 130, 60), (230, 200, 40), (110, 70, 40), (200, 180, 140), (230, 140, 170), (110, 50, 140),
    (235, 120, 30), (150, 140, 90), (140, 180, 220), (25, 70, 40),
)
_SKIN_PALETTE = ((241, 194, 167), (224, 172, 125), (198, 134, 66), (141, 85, 36), (92, 56, 30))
_HAIR_PALETTE = ((20, 18, 18), (60, 40, 25), (110, 75, 40), (200, 170, 100), (150, 150, 150))
_SHOE_PALETTE = ((25, 25, 25), (235, 235, 235), (90, 60, 40), (120, 120, 125))
_PATTERNS = ("plain", "hstripes", "vstripes", "checks")
_PATTERN_ODDS = (0.55, 0.15, 0.15, 0.15)
_UPPER_CUTS = ("long", "short")
_LOWER_CUTS = ("trousers", "trousers", "shorts", "skirt")
_BAGS = ("none", "none", "none", "backpack", "shoulder")


@dataclass(frozen=True)
class Garment:
    """One piece of clothing of the pool a domain's people dress from."""

    index: int
    colour: tuple[float, float, float]
    secondary: tuple[float, float, float]
    pattern: str
    period: int
    cut: str


@dataclass(frozen=True)
class Identity:
    """What makes one synthetic person recognisable."""

    pid: int
    upper: Garment
    lower: Garment
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    long_hair: bool
    shoes: tuple[int, int, int]
    build: float
    bag: str
    bag_colour: tuple[float, float, float]


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _clothing_colour(rng: np.random.Generator, style: DomainStyle) -> tuple[float, float, float]:
    red, green, blue = (channel / 255 for channel in _pick(rng, _CLOTHING_PALETTE))
    hue, saturation, value = colorsys.rgb_to_hsv(red, green, blue)
    hue = (hue + rng.uniform(-0.02, 0.02) + style.hue_shift) % 1.0
    saturation = min(1.0, saturation * rng.uniform(0.85, 1.1) * style.saturation)
    value = min(1.0, value * rng.uniform(0.85, 1.1))
    return tuple(255 * channel for channel in colorsys.hsv_to_rgb(hue, saturation, value))


def _garment(rng: np.random.Generator, style: DomainStyle, index: int, cuts: Sequence[str]) -> Garment:
    return Garment(
        index=index,
        colour=_clothing_colour(rng, style),
        secondary=_clothing_colour(rng, style),
        pattern=str(rng.choice(_PATTERNS, p=_PATTERN_ODDS)),
        period=int(rng.integers(3, 7)),
        cut=_pick(rng, cuts),
    )


def make_identities(rng: np.random.Generator, pids: Sequence[int], style: DomainStyle) -> list[Identity]:
    """Dress one person per pid from shared garment pools; no two people wear the same pair.

    Parameters
    ----------
    rng : numpy.random.Generator
        The generator's random stream.
    pids : sequence of int
        The person ids, in order.
    style : DomainStyle
        Gives the clothing palette.

    Returns
    -------
    list of Identity
    """
    pool_size = max(2, math.ceil(GARMENT_POOL_RATIO * len(pids)))
    uppers = [_garment(rng, style, index, _UPPER_CUTS) for index in range(pool_size)]
    lowers = [_garment(rng, style, index, _LOWER_CUTS) for index in range(pool_size)]
    pairs = rng.choice(pool_size * pool_size, size=len(pids), replace=False)
    return [
        Identity(
            pid=pid,
            upper=uppers[pair // pool_size],
            lower=lowers[pair % pool_size],
            skin=_pick(rng, _SKIN_PALETTE),
            hair=_pick(rng, _HAIR_PALETTE),
            long_hair=bool(rng.random() < 0.35),
            shoes=_pick(rng, _SHOE_PALETTE),
            build=float(rng.uniform(0.9, 1.1)),
            bag=_pick(rng, _BAGS),
            bag_colour=_clothing_colour(rng, style),
        )
        for pid, pair in zip(pids, pairs)
    ]


@dataclass(frozen=True)
class _Pose:
    """Where a person stands in the crop. Body coordinates (u, v) are fractions of the person's height,
    u across (negative = image left unless mirrored), v down from the top of the head."""

    cx: float
    top: float
    height: float
    width: float
    mirror: bool
    arm_swing: float
    stride: float

    def point(self, u: float, v: float) -> tuple[float, float]:
        side = -1.0 if self.mirror else 1.0
        return self.cx + side * u * self.height * self.width, self.top + v * self.height

    def polygon(self, *corners: tuple[float, float]) -> tuple[str, list[tuple[float, float]]]:
        return "polygon", [self.point(u, v) for u, v in corners]

    def box(self, u0: float, v0: float, u1: float, v1: float) -> tuple[str, list[tuple[float, float]]]:
        return self.polygon((u0, v0), (u1, v0), (u1, v1), (u0, v1))

    def ellipse(self, u0: float, v0: float, u1: float, v1: float) -> tuple[str, list[float]]:
        (x0, y0), (x1, y1) = self.point(u0, v0), self.point(u1, v1)
        return "ellipse", [min(x0, x1), y0, max(x0, x1), y1]


def _walking_pose(rng: np.random.Generator, person: Identity) -> _Pose:
    """A full-body pose with the detector's jitter: shift, scale and a slight change of width."""
    height = 116 * rng.uniform(0.88, 1.0)
    return _Pose(
        cx=WIDTH / 2 + rng.uniform(-4, 4),
        top=(HEIGHT - height) / 2 + rng.uniform(-3, 3),
        height=height,
        width=person.build * rng.uniform(0.92, 1.08),
        mirror=bool(rng.random() < 0.5),
        arm_swing=rng.uniform(-0.03, 0.03),
        stride=rng.uniform(0.0, 0.035),
    )


def _fragment_pose(rng: np.random.Generator, person: Identity) -> _Pose:
    """A pose seen far too close, as in a bad detection: only a piece of the body is in the crop."""
    height = 116 * rng.uniform(1.6, 2.6)
    return _Pose(
        cx=WIDTH / 2 + rng.uniform(-25, 25),
        top=-rng.uniform(0, height - 40),
        height=height,
        width=person.build,
        mirror=bool(rng.random() < 0.5),
        arm_swing=0.0,
        stride=0.02,
    )


class _Canvas:
    """An RGB float image that shapes are painted on through PIL masks."""

    def __init__(self, background: np.ndarray) -> None:
        self.pixels = background.copy()

    def paint(self, fill: np.ndarray | Sequence[float], *shapes: tuple[str, list]) -> None:
        mask = Image.new("L", (WIDTH, HEIGHT), 0)
        draw = ImageDraw.Draw(mask)
        for kind, coordinates in shapes:
            getattr(draw, kind)(coordinates, fill=255)
        inside = np.asarray(mask) > 0
        fill = np.asarray(fill, dtype=np.float32)
        self.pixels[inside] = fill[inside] if fill.ndim == 3 else fill


def _garment_fill(garment: Garment, pose: _Pose, top_v: float) -> np.ndarray:
    """The garment's colour or pattern over the whole crop, anchored to the body so it moves with it."""
    if garment.pattern == "plain":
        return np.asarray(garment.colour, dtype=np.float32)
    x0, y0 = pose.point(0.0, top_v)
    period = max(2, round(garment.period * pose.height / 116))
    across = ((_ROWS - int(y0)) // period) % 2 == 1
    down = ((_COLS - int(x0)) // period) % 2 == 1
    second = {"hstripes": across, "vstripes": down, "checks": across ^ down}[garment.pattern]
    second = np.broadcast_to(second, (HEIGHT, WIDTH))[..., None]
    return np.where(second, np.float32(garment.secondary), np.float32(garment.colour))


def _arm(pose: _Pose, side: float, v_start: float, v_end: float) -> tuple[str, list]:
    """The part of one arm between heights v_start and v_end; the hand end swings forward or back."""

    def across(v: float, shoulder: float, wrist: float) -> float:
        fraction = (v - 0.16) / 0.31
        return side * (shoulder + fraction * (wrist - shoulder)) + side * pose.arm_swing * fraction

    return pose.polygon(
        (across(v_start, 0.15, 0.16), v_start),
        (across(v_start, 0.215, 0.215), v_start),
        (across(v_end, 0.215, 0.215), v_end),
        (across(v_end, 0.15, 0.16), v_end),
    )


def _leg(pose: _Pose, side: float, v_end: float) -> tuple[str, list]:
    """One leg from the hip down to height v_end (0.94 = the ankle)."""
    spread = side * pose.stride * (v_end - 0.52) / 0.42
    hip = ((side * 0.005, 0.55), (side * 0.125, 0.52))
    return pose.polygon(*hip, (side * 0.11 + spread, v_end), (side * 0.025 + spread, v_end))


def _draw_person(canvas: _Canvas, person: Identity, pose: _Pose) -> None:
    """Paint a person back to front: hair, arms, legs, trousers, shoes, torso, head, bag."""
    upper = _garment_fill(person.upper, pose, 0.155)
    lower = _garment_fill(person.lower, pose, 0.50)
    if person.long_hair:
        canvas.paint(person.hair, pose.box(-0.075, 0.02, 0.075, 0.24))
    sleeve_end = 0.45 if person.upper.cut == "long" else 0.27
    canvas.paint(person.skin, *(_arm(pose, side, 0.16, 0.47) for side in (-1, 1)))
    canvas.paint(person.skin, *(pose.ellipse(side * 0.15, 0.44, side * 0.22, 0.51) for side in (-1, 1)))
    canvas.paint(upper, *(_arm(pose, side, 0.16, sleeve_end) for side in (-1, 1)))
    canvas.paint(person.skin, *(_leg(pose, side, 0.94) for side in (-1, 1)))
    if person.lower.cut == "skirt":
        canvas.paint(lower, pose.polygon((-0.13, 0.5), (0.13, 0.5), (0.17, 0.76), (-0.17, 0.76)))
    else:
        legs = (_leg(pose, side, 0.94 if person.lower.cut == "trousers" else 0.7) for side in (-1, 1))
        canvas.paint(lower, pose.box(-0.125, 0.5, 0.125, 0.6), *legs)
    canvas.paint(person.shoes, *(pose.ellipse(side * 0.01, 0.925, side * 0.125, 0.99) for side in (-1, 1)))
    canvas.paint(upper, pose.polygon((-0.15, 0.155), (0.15, 0.155), (0.12, 0.53), (-0.12, 0.53)))
    canvas.paint(person.skin, pose.box(-0.022, 0.11, 0.022, 0.17), pose.ellipse(-0.06, 0.0, 0.06, 0.13))
    canvas.paint(person.hair, pose.ellipse(-0.064, -0.008, 0.064, 0.07))
    if person.bag == "backpack":
        canvas.paint(person.bag_colour, pose.box(0.12, 0.19, 0.205, 0.43), pose.box(0.08, 0.16, 0.11, 0.35))
    elif person.bag == "shoulder":
        strap = pose.polygon((-0.12, 0.16), (-0.09, 0.16), (0.17, 0.43), (0.14, 0.43))
        canvas.paint(person.bag_colour, strap, pose.box(0.15, 0.42, 0.26, 0.56))


def _occlude(canvas: _Canvas, rng: np.random.Generator) -> None:
    """Hide part of the crop behind an object: something low in front (bench, car) or a pole at a side."""
    colour = rng.uniform(40, 200, size=3)
    if rng.random() < 0.5:
        top = HEIGHT * rng.uniform(0.65, 0.8)
        canvas.paint(colour, ("rectangle", [0, top, WIDTH, HEIGHT]))
    else:
        width = rng.uniform(8, 18)
        left = 0 if rng.random() < 0.5 else WIDTH - width
        canvas.paint(colour, ("rectangle", [left, 0, left + width, HEIGHT]))


def _random_colour(
    rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]
) -> tuple[int, int, int]:
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*saturation), rng.uniform(*value))
    return tuple(int(255 * channel) for channel in rgb)


def _camera_scene(rng: np.random.Generator, style: DomainStyle) -> np.ndarray:
    """The fixed background one camera sees: a lit wall and a floor, plus texture and objects for clutter."""
    height, width = HEIGHT + 2 * _SCENE_MARGIN_Y, WIDTH + 2 * _SCENE_MARGIN_X
    scene = Image.new("RGB", (width, height), _random_colour(rng, (0.05, 0.3), (0.5, 0.85)))
    draw = ImageDraw.Draw(scene)
    for _ in range(round(style.clutter * 14)):
        x, y = rng.uniform(-10, width), rng.uniform(-10, height * 0.8)
        w, h = rng.uniform(6, 30), rng.uniform(6, 40)
        draw.rectangle([x, y, x + w, y + h], fill=_random_colour(rng, (0.0, 0.45), (0.2, 0.9)))
    floor = height * rng.uniform(0.75, 0.88)
    draw.rectangle([0, floor, width, height], fill=_random_colour(rng, (0.0, 0.15), (0.3, 0.6)))
    pixels = np.asarray(scene, dtype=np.float32)
    light = np.linspace(rng.uniform(1.0, 1.15), rng.uniform(0.8, 0.95), height, dtype=np.float32)
    pixels = pixels * light[:, None, None]
    coarse = rng.normal(0, 1, size=(height // 8, width // 8)).astype(np.float32)
    blotches = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR))
    grain = rng.normal(0, 1, size=(height, width)).astype(np.float32)
    return pixels + (style.clutter * (25 * blotches + 8 * grain))[..., None]


class Renderer:
    """Draws the crops of one domain: fixed camera scenes and casts, random pose and lighting per image.

    The scenes and casts are drawn from ``rng`` at construction; every image then draws from ``self.rng``,
    which may be replaced (two renderers built from equal seeds share the cameras and can draw their images
    from independent streams, e.g. in parallel processes).
    """

    def __init__(self, rng: np.random.Generator, style: DomainStyle, num_cameras: int) -> None:
        self.rng = rng
        self.style = style
        self.scenes = [_camera_scene(rng, style) for _ in range(num_cameras)]
        exposure = 1 + 0.5 * style.camera_cast * rng.uniform(-1, 1, size=(num_cameras, 1))
        self.camera_gains = exposure * (1 + style.camera_cast * rng.uniform(-1, 1, size=(num_cameras, 3)))

    def person(self, person: Identity, camera: int) -> np.ndarray:
        """A detection of ``person`` by ``camera``, sometimes partly occluded."""
        canvas = _Canvas(self._background(camera))
        _draw_person(canvas, person, _walking_pose(self.rng, person))
        if self.rng.random() < OCCLUSION_PROBABILITY:
            _occlude(canvas, self.rng)
        return self._develop(canvas.pixels, camera)

    def fragment(self, person: Identity | None, camera: int) -> np.ndarray:
        """A bad detection: a piece of ``person`` seen too close, or the background alone when None."""
        canvas = _Canvas(self._background(camera))
        if person is not None:
            _draw_person(canvas, person, _fragment_pose(self.rng, person))
        return self._develop(canvas.pixels, camera)

    def _background(self, camera: int) -> np.ndarray:
        y = int(self.rng.integers(2 * _SCENE_MARGIN_Y + 1))
        x = int(self.rng.integers(2 * _SCENE_MARGIN_X + 1))
        return self.scenes[camera][y : y + HEIGHT, x : x + WIDTH]

    def _develop(self, pixels: np.ndarray, camera: int) -> np.ndarray:
        """The camera's part: optics blur, colour cast, exposure, gamma and sensor noise."""
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        radius = self.style.blur * self.rng.uniform(0.6, 1.4)
        image = image.filter(ImageFilter.GaussianBlur(radius))
        gain = self.style.brightness * (1 + self.style.lighting_jitter * self.rng.uniform(-1, 1))
        channel_gains = (gain * self.camera_gains[camera]).astype(np.float32)
        linear = np.asarray(image, dtype=np.float32) / 255 * channel_gains
        developed = 255 * np.clip(linear, 0, 1) ** self.style.gamma
        developed += self.style.noise * self.rng.standard_normal(developed.shape, dtype=np.float32)
        return np.clip(developed + 0.5, 0, 255).astype(np.uint8)


class _ImageWriter:
    """Names and saves crops the Market-1501 way, with frame numbers increasing per camera."""

    frames_per_sequence = 5000

    def __init__(self, root: str, rng: np.random.Generator, num_cameras: int) -> None:
        self.root = root
        self.rng = rng
        self.frames = [0] * num_cameras
        self.counts = dict.fromkeys(MARKET_STYLE_FOLDERS, 0)
        for folder in MARKET_STYLE_FOLDERS:
            os.makedirs(os.path.join(root, folder), exist_ok=True)

    def save(self, folder: str, pid: int, camera: int, pixels: np.ndarray) -> None:
        self.frames[camera] += int(self.rng.integers(1, 50))
        frame = self.frames[camera]
        sequence = 1 + frame // self.frames_per_sequence
        person = "-1" if pid < 0 else f"{pid:04d}"
        fname = f"{person}_c{camera + 1}s{sequence}_{frame:06d}_01.jpg"
        Image.fromarray(pixels).save(os.path.join(self.root, folder, fname), quality=JPEG_QUALITY)
        self.counts[folder] += 1


def _sightings(rng: np.random.Generator, num_cameras: int, images_per_camera: tuple[int, int]) -> list:
    """(camera, number of images) for the 2..4 cameras (at most all of them) that see one person."""
    low, high = CAMERAS_PER_IDENTITY
    count = int(rng.integers(low, min(high, num_cameras) + 1))
    cameras = sorted(int(camera) for camera in rng.choice(num_cameras, size=count, replace=False))
    return [(camera, int(rng.integers(images_per_camera[0], images_per_camera[1] + 1))) for camera in cameras]


def _check_options(
    num_train_ids: int, num_test_ids: int, num_cameras: int, images_per_camera: Sequence[int]
) -> None:
    if num_train_ids < 1 or num_test_ids < 1 or num_train_ids + num_test_ids > 9999:
        raise UserError(
            f"num_train_ids, num_test_ids: expected at least 1 each and 9999 in all (4-digit pids), "
            f"got {num_train_ids} and {num_test_ids}"
        )
    if num_cameras < 2:
        raise UserError(f"num_cameras: expected at least 2 (each identity is seen by two), got {num_cameras}")
    if len(images_per_camera) != 2 or not 2 <= images_per_camera[0] <= images_per_camera[1]:
        raise UserError(
            f"images_per_camera: expected (low, high) with 2 <= low <= high (one image per camera goes to "
            f"the query), got {tuple(images_per_camera)}"
        )


def _check_target(root: str) -> None:
    """Refuse to write into a folder that already holds a domain or other images, rather than mixing them."""
    if os.path.exists(os.path.join(root, MARKER)):
        raise UserError(f"{root}: already holds a generated domain ({MARKER}); delete it to regenerate")
    for folder in MARKET_STYLE_FOLDERS:
        path = os.path.join(root, folder)
        if os.path.isdir(path) and os.listdir(path):
            raise UserError(f"{path}: not empty but {root} has no {MARKER}; delete it to generate there")


def generate(
    root: str,
    domain: str,
    *,
    num_train_ids: int | None = None,
    num_test_ids: int | None = None,
    num_cameras: int = 6,
    images_per_camera: Sequence[int] | None = None,
    seed: int = 0,
    shift: float = 1.0,
) -> dict[str, Any]:
    """Write a synthetic domain into ``root`` in the Market-1501 layout, then its ``synth_meta.json``.

    Parameters
    ----------
    root : str
        Target folder; created if needed, must not hold images yet.
    domain : str
        ``synth_a`` or ``synth_b``.
    num_train_ids, num_test_ids : int, optional
        Identities of the training set (pids 1..num_train_ids) and of the test set (the next pids); the
        domain's :data:`DOMAIN_SIZES` when not given.
    num_cameras : int
        Cameras of the domain; each identity is seen by 2..4 of them.
    images_per_camera : (int, int), optional
        Inclusive range of the number of images of an identity per camera that sees it; low >= 2. The
        domain's :data:`DOMAIN_SIZES` when not given.
    seed : int
        Seed of the generator, mixed with the domain so that both domains differ for the same seed.
    shift : float
        Strength of synth_b's style, see :func:`domain_style`.

    Returns
    -------
    dict
        The content of ``synth_meta.json``: version, domain, options, style, image counts per folder and
        the (upper, lower) garment indices of each pid, which tell who shares a garment with whom.

    Raises
    ------
    UserError
        For an invalid option, or a ``root`` that already holds images.
    """
    style = domain_style(domain, shift)
    sizes = DOMAIN_SIZES[domain]
    num_train_ids = sizes["num_train_ids"] if num_train_ids is None else num_train_ids
    num_test_ids = sizes["num_test_ids"] if num_test_ids is None else num_test_ids
    images_per_camera = sizes["images_per_camera"] if images_per_camera is None else images_per_camera
    _check_options(num_train_ids, num_test_ids, num_cameras, images_per_camera)
    _check_target(root)
    rng = np.random.default_rng([_DOMAIN_ENTROPY[domain], seed])
    pids = list(range(1, num_train_ids + num_test_ids + 1))
    people = make_identities(rng, pids, style)
    train_people, test_people = people[:num_train_ids], people[num_train_ids:]
    passers_by = make_identities(rng, [0] * max(2, num_test_ids // 4), style)
    renderer = Renderer(rng, style, num_cameras)
    writer = _ImageWriter(root, rng, num_cameras)
    for person in train_people:
        for camera, count in _sightings(rng, num_cameras, images_per_camera):
            for _ in range(count):
                writer.save(_TRAIN_FOLDER, person.pid, camera, renderer.person(person, camera))
    for person in test_people:
        for camera, count in _sightings(rng, num_cameras, images_per_camera):
            query_index = int(rng.integers(count))
            for index in range(count):
                folder = _QUERY_FOLDER if index == query_index else _TEST_FOLDER
                writer.save(folder, person.pid, camera, renderer.person(person, camera))
    for passer_by in passers_by:
        camera = int(rng.integers(num_cameras))
        seen = passer_by if rng.random() < 0.5 else None
        writer.save(_TEST_FOLDER, 0, camera, renderer.fragment(seen, camera))
    for _ in range(max(2, num_test_ids // 8)):
        camera = int(rng.integers(num_cameras))
        writer.save(_TEST_FOLDER, -1, camera, renderer.fragment(_pick(rng, test_people), camera))
    meta = {
        "format_version": FORMAT_VERSION,
        "domain": domain,
        "options": {
            "num_train_ids": num_train_ids, "num_test_ids": num_test_ids, "num_cameras": num_cameras,
            "images_per_camera": list(images_per_camera), "seed": seed, "shift": shift,
        },
        "style": asdict(style),
        "images": writer.counts,
        "garments": {str(person.pid): [person.upper.index, person.lower.index] for person in people},
    }
    with open(os.path.join(root, MARKER), "w") as marker:
        json.dump(meta, marker, indent=1)
    return meta


def read_meta(root: str) -> dict[str, Any]:
    """The ``synth_meta.json`` of a generated domain folder.

    Raises
    ------
    UserError
        When the marker cannot be read or does not name a domain.
    """
    path = os.path.join(root, MARKER)
    try:
        with open(path) as marker:
            meta = json.load(marker)
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: unreadable synthetic-domain marker ({error})") from error
    if not isinstance(meta, dict) or meta.get("domain") not in DOMAINS:
        raise UserError(f"{path}: expected a synthetic-domain marker naming one of {', '.join(DOMAINS)}")
    return meta


class SyntheticDataset(Market1501):
    """A synthetic domain read by the Market-1501 loader; generated into ``root`` when its marker is missing.

    Parameters
    ----------
    root : str
        ``<data_dir>/<domain>``.
    domain : str
        ``synth_a`` or ``synth_b``.
    verbose : bool
        Print the generation line and the subset table.
    **options
        Passed to :func:`generate` when the domain is generated; ignored when ``root`` already holds one.

    Raises
    ------
    UserError
        When ``root`` holds the other domain.
    """

    def __init__(self, root: str, *, domain: str, verbose: bool = True, **options: Any) -> None:
        domain_style(domain)  # refuses an unknown domain before the folder is touched
        if not os.path.isfile(os.path.join(root, MARKER)):
            if verbose:
                print(f"generating synthetic domain {domain} in {root} ...")
            generate(root, domain, **options)
        self.meta = read_meta(root)
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{os.path.join(root, MARKER)}: written by format {self.meta.get('format_version')} of "
                            f"the generator, this one writes format {FORMAT_VERSION} ({domain}'s size may differ); "
                            f"delete {root} to regenerate it")
        if self.meta["domain"] != domain:
            raise UserError(f"{os.path.join(root, MARKER)}: holds domain {self.meta['domain']}, not {domain}")
        self.name = domain
        super().__init__(root, verbose=verbose)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: generate one synthetic domain into a folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder to generate into, e.g. data/synth_a")
    parser.add_argument("--domain", required=True, choices=DOMAINS)
    parser.add_argument("--num-train-ids", type=int, help="default: the domain's (150 for synth_a, 80 for synth_b)")
    parser.add_argument("--num-test-ids", type=int, help="default: the domain's (100 for synth_a, 60 for synth_b)")
    parser.add_argument("--num-cameras", type=int, default=6)
    parser.add_argument("--images-per-camera", type=int, nargs=2, metavar=("LOW", "HIGH"),
                        help="default: the domain's (2 4 for synth_a, 4 7 for synth_b)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shift", type=float, default=1.0, help="strength of synth_b's style (0: like A)")
    args = parser.parse_args(argv)
    try:
        meta = generate(
            args.root, args.domain, num_train_ids=args.num_train_ids, num_test_ids=args.num_test_ids,
            num_cameras=args.num_cameras, images_per_camera=args.images_per_camera, seed=args.seed,
            shift=args.shift,
        )
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{folder}: {count}" for folder, count in meta["images"].items())
    print(f"{args.domain} written to {args.root} ({counts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
