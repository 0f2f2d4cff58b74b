"""Synthetic two-domain person re-ID data: the project's built-in demo, since no benchmark can be downloaded.

A seeded generator draws pedestrian-like 128x64 crops (the Market-1501 crop size, :mod:`reid.datasets.pedestrians`)
and writes them in the Market-1501 layout and naming (``bounding_box_train/``, ``bounding_box_test/``,
``query/``, ``PPPP_cCsS_FFFFFF_NN.jpg``), so the Market-1501 loader reads them. There are two domains,
``synth_a`` and ``synth_b``, with different people and a different look (:class:`DomainStyle`): clothing palette,
lighting, per-camera colour casts, background clutter, sensor noise and blur. That gap is what unsupervised
domain adaptation (SSG) has to bridge.

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

import os
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
from PIL import Image

from reid.datasets.base import MARKET_STYLE_FOLDERS
from reid.datasets.market1501 import Market1501
from reid.datasets.pedestrians import STYLE_A, STYLE_B, DomainStyle, Renderer, make_identities
from reid.utils.cli import ArgumentParser, add
from reid.utils.errors import UserError
from reid.utils.records import read_json, write_json
from reid.utils.runtime import run_main

# Raised whenever the same options would write other images: 2 gave synth_b 80 training identities of about 17.
FORMAT_VERSION = 2
MARKER = "synth_meta.json"
DOMAINS = ("synth_a", "synth_b")
CAMERAS_PER_IDENTITY = (2, 4)
JPEG_QUALITY = 90
# Identities and images per camera of each domain. The target sees each person as often as Market-1501
# (17.2 images per identity; DukeMTMC-reID 23.5): SSG's DBSCAN (min_samples 4) groups an identity only when it
# has several close images, and SSG++ labels one image per group, so a sparser target leaves most of its people
# without a label (at about 9 images per identity, 69 of 150 people went unlabelled and the propagated labels'
# accuracy stayed near 57%).
DOMAIN_SIZES = {
    "synth_a": {"num_train_ids": 150, "num_test_ids": 100, "images_per_camera": (2, 4)},
    "synth_b": {"num_train_ids": 80, "num_test_ids": 60, "images_per_camera": (4, 7)},
}
# Mixed into every seed so that the two domains never hold the same people.
_DOMAIN_ENTROPY = {"synth_a": 1501, "synth_b": 1812}
_TRAIN_FOLDER, _TEST_FOLDER, _QUERY_FOLDER = MARKET_STYLE_FOLDERS


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
        badly_cropped = test_people[int(rng.integers(len(test_people)))]
        writer.save(_TEST_FOLDER, -1, camera, renderer.fragment(badly_cropped, camera))
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
    write_json(os.path.join(root, MARKER), meta)
    return meta


def read_meta(root: str) -> dict[str, Any]:
    """The ``synth_meta.json`` of a generated domain folder.

    Raises
    ------
    UserError
        When the marker cannot be read or does not name a domain.
    """
    path = os.path.join(root, MARKER)
    meta = read_json(path)
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


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: generate one synthetic domain into a folder."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add(parser, "--root", required=True, help="folder to generate into, e.g. data/synth_a")
    add(parser, "--domain", required=True, choices=DOMAINS)
    add(parser, "--num-train-ids", type=int, help="default: the domain's (150 for synth_a, 80 for synth_b)")
    add(parser, "--num-test-ids", type=int, help="default: the domain's (100 for synth_a, 60 for synth_b)")
    add(parser, "--num-cameras", type=int, default=6)
    add(parser, "--images-per-camera", type=int, nargs=2, metavar=("LOW", "HIGH"),
        help="default: the domain's (2 4 for synth_a, 4 7 for synth_b)")
    add(parser, "--seed", type=int, default=0)
    add(parser, "--shift", type=float, default=1.0, help="strength of synth_b's style (0: like A)")
    args = parser.parse_args(argv)
    meta = generate(args.root, args.domain, num_train_ids=args.num_train_ids, num_test_ids=args.num_test_ids,
                    num_cameras=args.num_cameras, images_per_camera=args.images_per_camera, seed=args.seed,
                    shift=args.shift)
    counts = ", ".join(f"{folder}: {count}" for folder, count in meta["images"].items())
    print(f"{args.domain} written to {args.root} ({counts})")


if __name__ == "__main__":
    raise SystemExit(run_main(main))
