"""What every script does first: check the logs dir, mirror the console, record the arguments, seed."""
from __future__ import annotations

import argparse
import os
import sys

from reid import datasets
from reid.datasets import ReIDDataset
from reid.models import check_bn_group_size
from reid.utils.errors import UserError
from reid.utils.logging import prepare_logs_dir, start_logging, write_json
from reid.utils.runtime import Runtime, init_runtime, set_seed


def start_run(args: argparse.Namespace) -> Runtime:
    """Set up the run described by ``args``; only rank 0 writes ``log.txt`` and ``args.json``."""
    runtime = init_runtime(args.gpu_devices)
    check_bn_group_size(args.bn_group_size, args.batch_size, runtime.world_size, len(runtime.gpu_ids))
    if runtime.is_main:
        prepare_logs_dir(args.logs_dir)
        start_logging(args.logs_dir)
        write_json(os.path.join(args.logs_dir, "args.json"), vars(args))
        print("command:", " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]))
        print(f"device: {runtime.device}" + (f" x {runtime.world_size} processes" if runtime.distributed else "")
              + (f" (DataParallel over GPUs {runtime.gpu_ids})" if len(runtime.gpu_ids) > 1 else ""))
    set_seed(args.seed)
    return runtime


class Scalars:
    """Optional TensorBoard scalars (``--tensorboard``) under ``<logs_dir>/tensorboard``; a no-op otherwise."""

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

    def add(self, step: int, record: dict, prefix: str = "") -> None:
        if self.writer is None:
            return
        for name, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(prefix + name, value, step)
        self.writer.flush()


def open_dataset(name: str, args: argparse.Namespace) -> ReIDDataset:
    """The dataset ``name`` under ``--data-dir``, with the options the command line gives it."""
    options = {"combine_val": args.msmt_list_val} if name == "msmt17" else {}
    return datasets.create(name, os.path.join(args.data_dir, name), **options)


def resolve_checkpoint(path: str, option: str = "--resume") -> str:
    """A checkpoint file, or a logs dir holding ``model_best.pth.tar`` or ``checkpoint.pth.tar``."""
    if os.path.isdir(path):
        for name in ("model_best.pth.tar", "checkpoint.pth.tar"):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise UserError(f"{option} {path}: folder holds no model_best.pth.tar or checkpoint.pth.tar")
    if not os.path.isfile(path):
        raise UserError(f"{option} {path}: no such checkpoint file or logs dir")
    return path


def check_batch(batch_size: int, num_instances: int, world_size: int = 1) -> None:
    if num_instances < 1 or batch_size % (num_instances * world_size):
        raise UserError(f"--batch-size {batch_size} must be a multiple of --num-instances {num_instances}"
                        + (f" x {world_size} processes" if world_size > 1 else ""))


def model_config(args: argparse.Namespace) -> dict:
    """What a checkpoint records of the model, to refuse resuming it with other options."""
    return {"arch": args.arch, "num_split": args.num_split, "features": args.features}


def check_model_config(checkpoint: dict, args: argparse.Namespace, source: str,
                       keys: tuple[str, ...] = ("arch", "num_split", "features")) -> None:
    """Compare a checkpoint's recorded model options (absent in the authors' files) with this run's."""
    stored, wanted = checkpoint.get("config") or {}, model_config(args)
    for key in keys:
        if key in stored and stored[key] != wanted[key]:
            option = {"arch": "-a/--arch", "num_split": "--num-split", "features": "--features"}[key]
            raise UserError(f"{source}: checkpoint was trained with {option} {stored[key]}, this run asks for "
                            f"{wanted[key]}")
