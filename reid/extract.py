"""Features of any images with a trained model.

    python -m reid.extract --resume logs/market2duke --images photos/ --out photos.h5

``--images`` is a folder, searched recursively for .jpg, .jpeg, .png and .bmp files (in sorted order), or a
text file of image paths, one per line (relative paths are taken from the text file's folder). The model is
the ``--resume`` checkpoint, this project's or the authors' release; its architecture, input size, stripes and
embedding width are read from the checkpoint's recorded config unless given (the authors' files record none:
then the paper's ResNet-50 at 256x128, two stripes, 2048 features).

The HDF5 file has the layout of ``--save-features``: a group ``images`` with ``features`` (N, (S+1) C), the
evaluation feature (pooled features of the image plus those of its mirror image, concatenated, then
L2-normalised, exactly as evaluation computes it), ``fnames``, and ``pids`` / ``camids`` (-1: unknown);
``--per-type`` adds ``features_global``, ``features_upper``, ``features_lower`` (each L2-normalised on its
own, the features SSG clusters). It runs on the GPU when there is one.
"""
from __future__ import annotations

import argparse
import os
import sys

from reid import models
from reid.arguments import add_trained_model_args, add_workers_arg
from reid.datasets.folder import list_images
from reid.experiment import load_trained_model, wrap_model
from reid.feature_extraction import eval_features, extract_features, save_features_h5, type_features
from reid.utils.cli import ArgumentParser, add
from reid.utils.data.preprocessor import unreadable_images
from reid.utils.errors import UserError
from reid.utils.runtime import init_runtime, run_main

ON_ERROR = ("stop", "skip")


def readable_images(paths: list[str], workers: int) -> list[str]:
    """The paths whose image decodes; every other one is named on one line of stderr."""
    problems = unreadable_images(paths, workers)
    for problem in problems.values():
        print(f"skipped {problem}", file=sys.stderr)
    kept = [path for path in paths if path not in problems]
    if not kept:
        raise UserError(f"--images: none of the {len(paths)} images could be read")
    return kept


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    paths = list_images(args.images)
    _check_output(args.out)
    model = load_trained_model(args)
    runtime = init_runtime(args.gpu_devices)
    if args.on_error == "skip":
        paths = readable_images(paths, args.workers)
    items = [(path, -1, -1) for path in paths]
    pooled = extract_features(wrap_model(model, runtime), items, runtime, args.height, args.width,
                              batch_size=args.batch_size, workers=args.workers, desc="images")
    features = eval_features(pooled)
    per_type = {}
    if args.per_type:
        per_type = {f"features_{name}": values
                    for name, values in zip(models.feature_type_names(args.num_split), type_features(pooled))}
    attrs = {"checkpoint": args.resume, "arch": args.arch, "height": args.height, "width": args.width,
             "num_split": args.num_split}
    if runtime.is_main:
        save_features_h5(args.out, {"images": (items, features)}, extra={"images": per_type}, attrs=attrs)
        print(f"{len(items)} images: {features.shape[1]}-d features written to {args.out}")


def _check_output(fpath: str) -> None:
    """Fail before the extraction, not after it, when the output cannot be written."""
    folder = os.path.dirname(os.path.abspath(fpath))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {fpath}: cannot create its folder ({exc.strerror})") from exc
    if not os.access(folder, os.W_OK) or os.path.isdir(fpath):
        raise UserError(f"--out {fpath}: cannot write an HDF5 file there")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    add_trained_model_args(parser)
    group = parser.add_argument_group("images")
    add(group, "--images", type=str, required=True, help="folder (searched recursively) or text file of paths")
    add(group, "--out", type=str, required=True, help="HDF5 file to write")
    add(group, "--per-type", action="store_true",
        help="also write the per-type features (global and each stripe, each L2-normalised)")
    add(group, "--on-error", type=str, default="stop", choices=ON_ERROR,
        help="an unreadable image stops the run (default) or is skipped, named on one line (skip decodes every "
             "image once more beforehand)")
    add(group, "--batch-size", "-b", type=int, default=128)
    add_workers_arg(group)
    add(group, "--gpu-devices", type=str, default=None,
        help="comma-separated GPU ids, or 'cpu' (default: every visible GPU)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
