"""The set-up every script shares: the run (logs dir, console, arguments, seed, devices), its metrics, the model
on its devices, the datasets, and the checkpoints with the model options they record."""
from __future__ import annotations

import argparse
import os
import sys
import threading

from torch import nn

from reid import datasets, models
from reid.datasets import ReIDDataset
from reid.models import convert_sync_batchnorm, group_batchnorm
from reid.utils.cost import describe_header, run_header
from reid.utils.data.preprocessor import Item, unreadable_images
from reid.utils.errors import UserError
from reid.utils.logging import (
    MetricsLog,
    claim_logs_dir,
    prepare_logs_dir,
    read_metrics,
    start_logging,
    write_json,
)
from reid.utils.osutils import fault_reason, storage_fault
from reid.utils.runtime import Runtime, init_runtime, set_seed, to_device
from reid.utils.serialization import load_checkpoint, load_model_weights

# The files of a run under --logs-dir that the scripts read back.
CHECKPOINT, BEST_MODEL, METRICS = "checkpoint.pth.tar", "model_best.pth.tar", "metrics.json"


def start_run(args: argparse.Namespace) -> Runtime:
    """Set up the run described by ``args``; only rank 0 locks the logs dir (a second run there stops at once)
    and writes ``log.txt`` and ``args.json``."""
    runtime = init_runtime(args.gpu_devices, args.dist_timeout)
    models.check_bn_group_size(args.bn_group_size, args.batch_size, runtime.world_size, len(runtime.gpu_ids))
    if runtime.is_main:
        prepare_logs_dir(args.logs_dir)
        claim_logs_dir(args.logs_dir)
        start_logging(args.logs_dir)
        write_json(os.path.join(args.logs_dir, "args.json"), vars(args))
        print("command:", " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]))
        print(f"device: {runtime.device}" + (f" x {runtime.world_size} processes" if runtime.distributed else "")
              + (f" (DataParallel over GPUs {runtime.gpu_ids})" if len(runtime.gpu_ids) > 1 else ""))
    set_seed(args.seed)
    return runtime


def wrap_model(model: nn.Module, runtime: Runtime, sync_bn: bool = True, bn_group_size: int = 0,
               batch_size: int | None = None) -> nn.Module:
    """Move ``model`` to the device (channels_last on CUDA, where convolutions run faster in that layout)
    and wrap it for several GPUs or processes.

    BatchNorm: with ``bn_group_size`` N > 0 every layer normalises consecutive groups of N images of the global
    training batch of ``batch_size`` images (:func:`reid.models.group_batchnorm`); with 0, one group per batch:
    the global batch under DDP when ``sync_bn``, else each GPU's or process's share.
    """
    if bn_group_size:
        rank_batch_size = batch_size // runtime.world_size if batch_size else None
        model = group_batchnorm(model, bn_group_size, rank_batch_size, runtime.device.type)
    elif runtime.distributed and sync_bn:
        model = convert_sync_batchnorm(model, runtime.device.type)
    model = to_device(model, runtime)
    if runtime.distributed:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if len(runtime.gpu_ids) > 1:
        return nn.DataParallel(model, device_ids=runtime.gpu_ids)
    return model


def open_metrics(args: argparse.Namespace, runtime: Runtime, data: dict | None = None) -> MetricsLog:
    """The run's metrics.json, holding ``data`` (the entries of the run being continued, if any), with this
    start's :func:`run_header` appended to its ``run`` list, so that a resumed run keeps where it first ran; the
    header is printed too."""
    metrics = MetricsLog(os.path.join(args.logs_dir, METRICS), data, write=runtime.is_main)
    header = run_header(args, runtime)
    if runtime.is_main:
        print(f"running on: {describe_header(header)}")
    metrics["run"] = [*metrics.data.get("run", []), header]
    return metrics


def read_run_metrics(logs_dir: str) -> dict:
    """The metrics.json entries of the run in ``logs_dir`` (none when it has no such file), to continue it."""
    return read_metrics(os.path.join(logs_dir, METRICS))


class Scalars:
    """Optional TensorBoard scalars (``--tensorboard``) under ``<logs_dir>/tensorboard``; a no-op otherwise. A
    write the system refuses (a full disk) stops the run with one line naming the folder."""

    def __init__(self, logs_dir: str, enabled: bool):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("tensorboard skipped: the tensorboard package is not installed (pip install tensorboard)")
            return
        self.writer = SummaryWriter(os.path.join(logs_dir, "tensorboard"))
        threading.excepthook = _quiet_event_writer_faults

    def add(self, step: int, record: dict, prefix: str = "") -> None:
        if self.writer is None:
            return
        try:
            for name, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(prefix + name, value, step)
            self.writer.flush()
        except Exception as exc:
            fault = storage_fault(exc)
            if fault is None:
                raise
            raise UserError(f"{self.writer.get_logdir()}: TensorBoard events could not be written "
                            f"({fault_reason(fault)}); stopped, the run's checkpoints and metrics are kept") from exc


_print_thread_exception = threading.excepthook


def _quiet_event_writer_faults(args: threading.ExceptHookArgs) -> None:
    """TensorBoard writes from a thread of its own, which re-raises a refused write (Python prints it as a
    traceback) after keeping it for :meth:`Scalars.add`'s flush to raise: that one tells it, in one line."""
    if not (type(args.thread).__module__.startswith("tensorboard.") and storage_fault(args.exc_value)):
        _print_thread_exception(args)


def open_dataset(name: str, args: argparse.Namespace) -> ReIDDataset:
    """The dataset ``name`` under ``--data-dir``, with the options the command line gives it."""
    options = {"combine_val": args.msmt_list_val} if name == "msmt17" else {}
    return datasets.create(name, os.path.join(args.data_dir, name), **options)


def check_images(subsets: dict[str, list[Item]], runtime: Runtime, workers: int) -> None:
    """``--check-images``: decode every image of ``subsets`` (named ``dataset subset``) once before any training,
    on rank 0 with ``workers`` loader processes, and name every unreadable one in a single UserError, so that a
    damaged copy of a dataset is repaired in one round rather than one image per start."""
    paths = list(dict.fromkeys(fname for items in subsets.values() for fname, _, _ in items))
    problems = runtime.share(lambda: unreadable_images(paths, workers))
    if problems:
        raise UserError(f"--check-images: {len(problems)} of the {len(paths)} images of {', '.join(subsets)} cannot "
                        f"be read: {'; '.join(problems.values())}")
    if runtime.is_main:
        print(f"--check-images: the {len(paths)} images of {', '.join(subsets)} decode")


BEST_FIRST = (BEST_MODEL, CHECKPOINT)
NEWEST_FIRST = (CHECKPOINT, BEST_MODEL)


def resolve_checkpoint(path: str, option: str = "--resume", names: tuple[str, ...] = BEST_FIRST) -> str:
    """A checkpoint file, or the first of ``names`` in a logs dir: the selected model (``--resume``: a model to
    use) or the newest state (:data:`NEWEST_FIRST`, ``--resume-from``: a run to continue where it stopped)."""
    if os.path.isdir(path):
        for name in names:
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise UserError(f"{option} {path}: folder holds no {' or '.join(names)}")
    if not os.path.isfile(path):
        raise UserError(f"{option} {path}: no such checkpoint file or logs dir")
    return path


def check_batch(batch_size: int, num_instances: int, world_size: int = 1, what: str = "") -> None:
    """A batch is whole blocks of ``num_instances`` images on every process; ``what`` names where
    ``num_instances`` comes from when it is not ``--num-instances``."""
    if num_instances < 1 or batch_size % (num_instances * world_size):
        raise UserError(f"--batch-size {batch_size} must be a multiple of {what or '--num-instances'} {num_instances}"
                        + (f" x {world_size} processes" if world_size > 1 else ""))


# The model of the paper: what applies when neither the user nor the checkpoint says otherwise.
PAPER_MODEL = {"arch": "resnet50", "num_split": 2, "features": 2048, "height": 256, "width": 128}
_OPTION_NAMES = {"arch": "-a/--arch", "num_split": "--num-split", "features": "--features", "height": "--height",
                 "width": "--width"}
# What the weights themselves depend on: a checkpoint cannot be loaded with other values.
WEIGHT_KEYS = ("arch", "features")


def model_config(args: argparse.Namespace) -> dict:
    """What a checkpoint records of the model: the options its later users take by default."""
    return {key: getattr(args, key) for key in PAPER_MODEL}


def resolve_model_options(args: argparse.Namespace, checkpoint: dict | None, source: str = "",
                          keys: tuple[str, ...] = tuple(PAPER_MODEL)) -> None:
    """Settle the model options (-a, --num-split, --features, --height, --width) in ``args``.

    An option the user did not give (None) takes the checkpoint's recorded value, else the paper's
    (:data:`PAPER_MODEL`; the authors' files record none). A given value among ``keys`` that contradicts
    the checkpoint raises UserError naming ``source``; the others may differ (e.g. adapting a source model
    with another ``--num-split``).
    """
    stored = (checkpoint or {}).get("config") or {}
    for key, default in PAPER_MODEL.items():
        given = getattr(args, key)
        if given is None:
            setattr(args, key, stored.get(key, default))
        elif key in keys and key in stored and stored[key] != given:
            raise UserError(f"{source}: checkpoint was trained with {_OPTION_NAMES[key]} {stored[key]}, this run "
                            f"asks for {given}")


def load_trained_model(args: argparse.Namespace) -> nn.Module:
    """The model of the ``--resume`` checkpoint (ours or the authors' layout), in eval mode, on the CPU and
    without classifier; the model options in ``args`` not given are settled from it first."""
    source = resolve_checkpoint(args.resume)
    checkpoint = load_checkpoint(source)
    resolve_model_options(args, checkpoint, args.resume, keys=WEIGHT_KEYS)
    models.check_num_split(args.height, args.num_split)
    model = models.create(args.arch, num_split=args.num_split, num_features=args.features, pretrained=False)
    load_model_weights(model, checkpoint["state_dict"], source, drop_classifier=True)
    return model.eval()
