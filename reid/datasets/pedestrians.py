"""The pedestrians of the synthetic domains (:mod:`reid.datasets.synthetic`): seeded people dressed from shared
garment pools, drawn by cameras with their own scene, colour cast, lighting, noise and blur.

An identity is an upper garment and a lower garment (colour and pattern: plain, horizontal stripes, vertical
stripes, checks), skin, hair, shoes, build and an optional bag. Garments come from a pool smaller than the
number of people, so several people share an upper garment but not the lower one and the other way round: only
the combination of the upper-body and lower-body parts tells them apart, as in SSG's part-based grouping. A
:class:`DomainStyle` is how a domain looks; two styles make the domain gap that adaptation bridges.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# A crop has Market-1501's size.
HEIGHT, WIDTH = 128, 64
OCCLUSION_PROBABILITY = 0.15
# Pool size / number of people: below 1 so that garments are shared between identities.
GARMENT_POOL_RATIO = 0.5
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
