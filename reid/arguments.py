"""Argument groups shared by the entry points: the three scripts, ``reid.extract`` and ``reid.export`` (and
``--workers`` of the benchmarks), with the paper's defaults. Every option accepts the hyphenated spelling and the
underscore spelling typed in the authors' README (:func:`reid.utils.cli.add`).
"""
from __future__ import annotations

import argparse
import os

from reid import datasets, models
from reid.cluster import AUTO_RHO, rho_arg
from reid.paper import ADAPTATION, GROUPING, PAPER_MODEL, SOURCE, Schedule
from reid.utils.cli import ArgumentParser, add, positive_float, positive_int
from reid.utils.data.loaders import default_workers
from reid.utils.runtime import DEFAULT_DIST_TIMEOUT

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def add_data_args(parser: argparse.ArgumentParser, cross_domain: bool, batch_size: int,
                  num_instances: int) -> None:
    group = parser.add_argument_group("data")
    choices = datasets.names()
    if cross_domain:
        add(group, "--src-dataset", type=str, default="synth_a", choices=choices, help="labelled source domain")
        add(group, "--tgt-dataset", type=datasets.dataset_arg, default="synth_b", metavar="TARGET",
            help="unlabelled target domain: a dataset name, or your own crops, folder:PATH (a folder searched "
                 "recursively for images) or list:FILE (a text file of image paths) (docs/own-data.md)")
        add(group, "--test-dir", type=str, default=None, metavar="FOLDER",
            help="a labelled test set in the Market-1501 layout (query/, bounding_box_test/) to evaluate a "
                 "folder: or list: target on; without it such a run records the grouping's figures only")
    else:
        add(group, "--dataset", "-d", type=str, default="synth_a", choices=choices)
    add(group, "--data-dir", type=str, default=os.path.join(REPO_DIR, "data"),
        help="folder holding one sub-folder per dataset (data/market1501, ...)")
    add(group, "--msmt-list-val", action="store_true",
        help="also train on MSMT17's list_val.txt (32,621 images; the authors' code used list_train.txt alone)")
    add(group, "--cuhk03-labeled", action="store_true",
        help="CUHK03-NP's hand-drawn boxes (cuhk03-np/labeled/) instead of the detected ones (the default)")
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


def add_model_args(parser: argparse.ArgumentParser, bn_group_size: int = 0, source: bool = False) -> None:
    """The model's options; with ``source``, also those of a model trained from ImageNet weights with a
    classifier (source training: the adaptation scripts load every weight from the source model)."""
    group = parser.add_argument_group("model")
    _add_architecture(group)
    if source:
        add(group, "--dropout", type=float, default=0.1, help="dropout before the identity classifier")
        add(group, "--no-pretrained", action="store_true", help="start from random weights (no ImageNet)")
        add(group, "--pretrained-path", type=str, default=None,
            help="torchvision ResNet state dict to start from (offline boxes)")
    add(group, "--bn-group-size", type=int, default=bn_group_size, metavar="N",
        help="BatchNorm statistics over consecutive groups of N images of the global batch, on any number of "
             f"GPUs or processes (the paper: 64, 2 GPUs x 64); 0 = one group per batch (default {bn_group_size})")
    add(group, "--sync-bn", action=argparse.BooleanOptionalAction, default=True,
        help="with --bn-group-size 0 under torchrun (DDP): BatchNorm over the global batch (default) or each "
             "process's share")


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


def add_optim_args(parser: argparse.ArgumentParser, schedule: Schedule, sgd: bool) -> None:
    """Optimisation with ``schedule``'s defaults: SGD with momentum (``sgd``, adaptation) or Adam (source)."""
    group = parser.add_argument_group("optimisation")
    add(group, "--lr", type=float, default=schedule.lr)
    if sgd:
        add(group, "--momentum", type=float, default=0.9, help="SGD momentum")
    add(group, "--weight-decay", type=float, default=5e-4)
    add(group, "--epochs", type=int, default=schedule.epochs)
    add(group, "--margin", type=float, default=0.5, help="triplet margin")


def add_grouping_args(parser: argparse.ArgumentParser) -> None:
    """Self-similarity grouping (docs/algorithm.md, "Self-similarity grouping")."""
    group = parser.add_argument_group("grouping")
    add(group, "--iteration", type=int, default=ADAPTATION.iterations, help="grouping + training rounds")
    add(group, "--lambda-value", type=float, default=GROUPING["lambda_value"],
        help="weight of the source term in the distance")
    add(group, "--rho", type=rho_arg, default=None,
        help=f"share of the closest pairs that sets DBSCAN's eps, or {AUTO_RHO} (from --images-per-identity, the "
             f"paper's rule); default: the released {GROUPING['rho']:g}, or the rule's when "
             "--images-per-identity is given")
    add(group, "--images-per-identity", type=positive_float, default=None, metavar="E",
        help="how many images of each person the target holds on average: sets rho by the paper's rule, "
             "1.28 x (E - 1) / (N - 1) for N target images (Market-1501: 17.2)")
    add(group, "--k1", type=int, default=GROUPING["k1"])
    add(group, "--k2", type=int, default=GROUPING["k2"])
    add(group, "--min-samples", type=int, default=GROUPING["min_samples"], help="DBSCAN min_samples")


def add_run_args(parser: argparse.ArgumentParser, logs_name: str, resume: str) -> None:
    """The run's options; ``resume`` says what ``--resume`` starts from."""
    group = parser.add_argument_group("run")
    add(group, "--seed", type=int, default=1)
    add(group, "--logs-dir", type=str, default=os.path.join(REPO_DIR, "logs", logs_name))
    add(group, "--resume", type=str, default="", help=resume)
    add(group, "--resume-from", type=str, default="", metavar="LOGS_DIR",
        help="continue a stopped run from its newest checkpoint (model, optimiser, RNG state and records)")
    add(group, "--evaluate", action="store_true", help="only evaluate the --resume model, then stop")
    add(group, "--gpu-devices", type=str, default=None,
        help="comma-separated GPU ids for DataParallel, or 'cpu' (default: every visible GPU)")
    add(group, "--dist-timeout", type=positive_int, default=DEFAULT_DIST_TIMEOUT, metavar="SECONDS",
        help="under torchrun, a rank that waits this long in a collective, or for a sign of life from rank 0 "
             "while rank 0 works alone (however long that work takes), stops, and so does the run "
             "(default %(default)s; docs/distributed.md)")
    add(group, "--amp", action="store_true", help="mixed precision on CUDA (bf16 when supported, else fp16)")
    add(group, "--print-freq", type=positive_int, default=10,
        help="batches between progress lines (and between reads of the losses from the GPU)")
    add(group, "--save-features", type=str, default=None,
        help="HDF5 file for the final query/gallery features, names, pids and cameras")
    add(group, "--rerank", action="store_true",
        help="also report mAP and CMC after k-reciprocal re-ranking (Zhong et al.'s setting) in every evaluation")
    add(group, "--visrank", type=int, default=0, metavar="N",
        help="draw the top-10 gallery images of N queries after the final evaluation (logs dir/visrank)")
    add(group, "--tensorboard", action="store_true", help="also log scalars for TensorBoard (needs tensorboard)")
    add(group, "--debug", action="store_true", help="show full tracebacks")


def adaptation_parser(description: str, logs_name: str) -> ArgumentParser:
    """The options of both adaptation scripts (selftraining.py, semitraining.py), with the paper's defaults."""
    parser = ArgumentParser(description=description)
    add_data_args(parser, cross_domain=True, batch_size=ADAPTATION.batch_size, num_instances=ADAPTATION.num_instances)
    add_model_args(parser, bn_group_size=ADAPTATION.bn_group_size)
    add_optim_args(parser, ADAPTATION, sgd=True)
    add_grouping_args(parser)
    add_run_args(parser, logs_name=logs_name,
                 resume="the source model trained by source_train.py (ours or the authors' .pth.tar, or a logs dir)")
    return parser


def source_parser(description: str) -> ArgumentParser:
    """The options of source_train.py, with the paper's defaults."""
    parser = ArgumentParser(description=description)
    add_data_args(parser, cross_domain=False, batch_size=SOURCE.batch_size, num_instances=SOURCE.num_instances)
    add_model_args(parser, source=True)
    add_optim_args(parser, SOURCE, sgd=False)
    add_run_args(parser, logs_name="source",
                 resume="weights to start from (a checkpoint file or a logs dir); with --evaluate, the model to test")
    return parser
