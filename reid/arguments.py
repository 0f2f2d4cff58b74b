"""Argument groups shared by the entry points: the three scripts, ``reid.extract`` and ``reid.export`` (and
``--workers`` of the benchmarks).

Every option accepts the hyphenated spelling and the underscore spelling typed in the authors' README
(``--data-dir``/``--data_dir``, ``--src-dataset``/``--src_dataset``, ...).
"""
from __future__ import annotations

import argparse
import os

from reid import datasets, models
from reid.experiment import PAPER_MODEL
from reid.utils.data.loaders import default_workers
from reid.utils.runtime import DEFAULT_DIST_TIMEOUT

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the scripts' error style: one line ``error: ...`` on stderr and exit status 2."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def _spellings(name: str) -> list[str]:
    """``--data-dir`` -> ["--data-dir", "--data_dir"] (one entry when the name has neither)."""
    body = name[2:]
    hyphen, underscore = body.replace("_", "-"), body.replace("-", "_")
    return ["--" + hyphen] if hyphen == underscore else ["--" + hyphen, "--" + underscore]


def positive_int(text: str) -> int:
    """argparse type of a count that must be at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type of a number that must be above 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add(group, name: str, *short: str, **kwargs) -> None:
    """``add_argument`` with both spellings of ``name``."""
    group.add_argument(*short, *_spellings(name), **kwargs)


def add_data_args(parser: argparse.ArgumentParser, cross_domain: bool, batch_size: int,
                  num_instances: int) -> None:
    group = parser.add_argument_group("data")
    choices = datasets.names()
    if cross_domain:
        add(group, "--src-dataset", type=str, default="synth_a", choices=choices, help="labelled source domain")
        add(group, "--tgt-dataset", type=str, default="synth_b", choices=choices, help="unlabelled target domain")
    else:
        add(group, "--dataset", "-d", type=str, default="synth_a", choices=choices)
    add(group, "--data-dir", type=str, default=os.path.join(REPO_DIR, "data"),
        help="folder holding one sub-folder per dataset (data/market1501, ...)")
    add(group, "--msmt-list-val", action="store_true",
        help="also train on MSMT17's list_val.txt (32,621 images; the authors' code used list_train.txt alone)")
    add(group, "--batch-size", "-b", type=int, default=batch_size)
    add(group, "--num-instances", type=int, default=num_instances, help="images per identity in a batch")
    add(group, "--check-images", action="store_true",
        help="decode every image the run uses once before training and name all unreadable ones in one message")
    add_workers_arg(group)
    _add_input_size(group)


def add_workers_arg(group) -> None:
    """``--workers``: every entry point's loaders take their worker count from here, by default what this
    machine has (:func:`reid.utils.data.loaders.default_workers`: torch warns when a loader starts more
    workers than there are cores)."""
    add(group, "--workers", "-j", type=int, default=default_workers(),
        help="data loading processes (default: the CPU cores available less one, at most 8; here %(default)s)")


def add_model_args(parser: argparse.ArgumentParser, bn_group_size: int = 0) -> None:
    group = parser.add_argument_group("model")
    _add_architecture(group)
    add(group, "--dropout", type=float, default=0.1)
    add(group, "--no-pretrained", action="store_true", help="start from random weights (no ImageNet)")
    add(group, "--pretrained-path", type=str, default=None, help="torchvision ResNet state dict (offline boxes)")
    add(group, "--bn-group-size", type=int, default=bn_group_size, metavar="N",
        help="BatchNorm statistics over consecutive groups of N images of the global batch, on any number of "
             f"GPUs or processes (the paper: 64, 2 GPUs x 64); 0 = one group per batch (default {bn_group_size})")


def add_trained_model_args(parser: argparse.ArgumentParser) -> None:
    """A trained model to use (``reid.extract``, ``reid.export``): its checkpoint and model options."""
    group = parser.add_argument_group("model")
    add(group, "--resume", type=str, required=True,
        help="checkpoint file (this project's or the authors' release), or a logs dir holding one")
    _add_architecture(group)
    _add_input_size(group)
    add(group, "--debug", action="store_true", help="show full tracebacks")


# The model options default to None, "not given": the checkpoint's recorded value, else the paper's, applies
# (reid.experiment.resolve_model_options).
def _from_checkpoint(key: str) -> str:
    return f"default: the checkpoint's, else {PAPER_MODEL[key]}"


def _add_architecture(group) -> None:
    add(group, "--arch", "-a", type=str, default=None, choices=models.names(), help=_from_checkpoint("arch"))
    add(group, "--features", type=int, default=None,
        help=f"size of the embedding x2 ({_from_checkpoint('features')})")
    add(group, "--num-split", type=int, default=None,
        help=f"horizontal stripes pooled besides the global pool ({_from_checkpoint('num_split')})")


def _add_input_size(group) -> None:
    add(group, "--height", type=int, default=None, help=f"input height in pixels ({_from_checkpoint('height')})")
    add(group, "--width", type=int, default=None, help=f"input width in pixels ({_from_checkpoint('width')})")


def add_optim_args(parser: argparse.ArgumentParser, lr: float, epochs: int, margin: float = 0.5) -> None:
    group = parser.add_argument_group("optimisation")
    add(group, "--lr", type=float, default=lr)
    add(group, "--momentum", type=float, default=0.9)
    add(group, "--weight-decay", type=float, default=5e-4)
    add(group, "--epochs", type=int, default=epochs)
    add(group, "--margin", type=float, default=margin, help="triplet margin")


def add_grouping_args(parser: argparse.ArgumentParser) -> None:
    """Self-similarity grouping (spec section 4)."""
    group = parser.add_argument_group("grouping")
    add(group, "--iteration", type=int, default=30, help="grouping + training rounds")
    add(group, "--lambda-value", type=float, default=0.1, help="weight of the source term in the distance")
    add(group, "--rho", type=float, default=1.6e-3, help="fraction of closest pairs that sets DBSCAN's eps")
    add(group, "--k1", type=int, default=20)
    add(group, "--k2", type=int, default=6)
    add(group, "--min-samples", type=int, default=4, help="DBSCAN min_samples")


def add_run_args(parser: argparse.ArgumentParser, logs_name: str) -> None:
    group = parser.add_argument_group("run")
    add(group, "--seed", type=int, default=1)
    add(group, "--logs-dir", type=str, default=os.path.join(REPO_DIR, "logs", logs_name))
    add(group, "--resume", type=str, default="", help="checkpoint file, or a logs dir holding one")
    add(group, "--evaluate", action="store_true", help="only evaluate the --resume checkpoint")
    add(group, "--gpu-devices", type=str, default=None,
        help="comma-separated GPU ids for DataParallel, or 'cpu' (default: every visible GPU)")
    add(group, "--dist-timeout", type=positive_int, default=DEFAULT_DIST_TIMEOUT, metavar="SECONDS",
        help="under torchrun, a rank that waits this long for another (dead or hung) stops, and so does the run "
             "(default %(default)s)")
    add(group, "--sync-bn", action=argparse.BooleanOptionalAction, default=True,
        help="synchronised BatchNorm under torchrun (DDP)")
    add(group, "--amp", action="store_true", help="mixed precision on CUDA (bf16 when supported, else fp16)")
    add(group, "--print-freq", type=positive_int, default=10,
        help="batches between progress lines (and between reads of the losses from the GPU)")
    add(group, "--save-features", type=str, default=None,
        help="HDF5 file for the final query/gallery features, names, pids and cameras")
    add(group, "--rerank", action="store_true",
        help="also report mAP and CMC after k-reciprocal re-ranking (k1 20, k2 6, lambda 0.3) in every evaluation")
    add(group, "--visrank", type=int, default=0, metavar="N",
        help="draw the top-10 gallery images of N queries after the final evaluation (logs dir/visrank)")
    add(group, "--tensorboard", action="store_true", help="also log scalars for TensorBoard (needs tensorboard)")
    add(group, "--debug", action="store_true", help="show full tracebacks")
