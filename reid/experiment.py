"""What every script's run shares: the set-up (logs dir, console, arguments, seed, devices), the model on its
devices, the datasets, the checkpoints with the model options they record, and :class:`Run`, the life of a run
under ``--logs-dir`` (where it starts or continues, its records and their cost, its checkpoints)."""
from __future__ import annotations

import argparse
import os
import sys
import threading

import torch
from torch import nn

from reid import datasets, models
from reid.cost.meter import CostMeter, describe_header, finish_record, record_meter, run_header
from reid.datasets import ReIDDataset
from reid.models import convert_sync_batchnorm, group_batchnorm
from reid.paper import PAPER_MODEL
from reid.utils.data.preprocessor import Item, unreadable_images
from reid.utils.errors import UserError
from reid.utils.logging import start_logging
from reid.utils.logs_dir import claim_logs_dir, prepare_logs_dir
from reid.utils.osutils import storage_error, storage_fault
from reid.utils.records import ARGS, BEST_MODEL, CHECKPOINT, METRICS, MetricsLog, read_metrics, write_json
from reid.utils.runtime import Runtime, init_runtime, rng_state, set_rng_state, set_seed, to_device
from reid.utils.serialization import load_checkpoint, load_model_weights, save_checkpoint


def start_run(args: argparse.Namespace) -> Runtime:
    """Set up the run described by ``args``; only rank 0 locks the logs dir (a second run there stops at once)
    and writes ``log.txt`` and ``args.json``."""
    if args.bn_group_size and not args.sync_bn:
        raise UserError(f"--no-sync-bn: BatchNorm follows --bn-group-size {args.bn_group_size} here; give "
                        "--bn-group-size 0 --no-sync-bn for each process's own statistics")
    runtime = init_runtime(args.gpu_devices, args.dist_timeout)
    models.check_bn_group_size(args.bn_group_size, args.batch_size, runtime.world_size, len(runtime.gpu_ids))
    if runtime.is_main:
        prepare_logs_dir(args.logs_dir)
        claim_logs_dir(args.logs_dir)
        start_logging(args.logs_dir)
        write_json(os.path.join(args.logs_dir, ARGS), vars(args))
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
            error = storage_error(exc, f"{self.writer.get_logdir()}: TensorBoard events",
                                  "the run's checkpoints and metrics are kept")
            if error is None:
                raise
            raise error from exc


_print_thread_exception = threading.excepthook


def _quiet_event_writer_faults(args: threading.ExceptHookArgs) -> None:
    """TensorBoard writes from a thread of its own, which re-raises a refused write (Python prints it as a
    traceback) after keeping it for :meth:`Scalars.add`'s flush to raise: that one tells it, in one line."""
    if not (type(args.thread).__module__.startswith("tensorboard.") and storage_fault(args.exc_value)):
        _print_thread_exception(args)


def open_dataset(name: str, args: argparse.Namespace, test_dir: str | None = None) -> ReIDDataset:
    """The dataset ``name`` under ``--data-dir`` (or the crops a ``folder:``/``list:`` spec names, with the labelled
    test set ``test_dir``), with the options the command line gives it."""
    options = {"msmt17": {"combine_val": args.msmt_list_val}, "cuhk03": {"labeled": args.cuhk03_labeled}}
    if test_dir is not None:
        options[name] = {"test_dir": test_dir}
    return datasets.create(name, os.path.join(args.data_dir, name), **options.get(name, {}))


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


def load_run_checkpoint(fpath: str) -> dict:
    """A checkpoint a run can continue from (``--resume-from``); another file raises UserError naming it."""
    checkpoint = load_checkpoint(fpath)
    if not {"optimizer", "epoch"} <= set(checkpoint):
        raise UserError(f"{fpath}: not a checkpoint to continue a run from (it has no optimiser state or epoch "
                        "count); a model to start from is given with --resume")
    return checkpoint


def run_checkpoint_in(logs_dir: str, run_id: str) -> dict | None:
    """The checkpoint in ``logs_dir`` when the torchrun run ``run_id`` wrote it (an older run's is not this
    run's state), else None. Written atomically, it is always the newest complete one."""
    fpath = os.path.join(logs_dir, CHECKPOINT)
    if not run_id or not os.path.isfile(fpath):
        return None
    checkpoint = load_run_checkpoint(fpath)
    return checkpoint if checkpoint.get("run_id") == run_id else None


def resumed_checkpoint(args: argparse.Namespace) -> dict | None:
    """The checkpoint of ``--resume-from`` (its newest, with the model options it records settled in ``args``),
    None without it; read before any expensive work."""
    if not args.resume_from:
        return None
    if args.evaluate:
        raise UserError("--evaluate tests the --resume model; --resume-from continues a run: give one of them")
    checkpoint = load_run_checkpoint(resolve_checkpoint(args.resume_from, "--resume-from", NEWEST_FIRST))
    resolve_model_options(args, checkpoint, args.resume_from)
    return checkpoint


class Run:
    """The life of a run under ``--logs-dir``, shared by the three scripts.

    Set-up (:func:`start_run`), then :meth:`continue_from` decides where the run starts: after torchrun restarted
    its worker group, this run's newest checkpoint in the logs dir; else the ``--resume-from`` checkpoint; else a
    fresh start. Rank 0 reads the files and decides for every rank. :attr:`metrics` is metrics.json (the continued
    run's records kept), :attr:`cost` the meter of the record being made (:mod:`reid.cost.meter`), and
    :meth:`save` writes a checkpoint with every rank's RNG states, the torchrun run's id and the model options,
    which :meth:`restore` puts back. Rank 0 alone writes: a record ends with a barrier (the other ranks wait for
    it however long it writes, :meth:`reid.utils.runtime.Runtime.barrier`).
    """

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.runtime = start_run(args)
        self.scalars = Scalars(args.logs_dir, args.tensorboard and self.runtime.is_main)
        self.metrics: MetricsLog | None = None
        self.cost: CostMeter | None = None

    def continue_from(self, resumed: dict | None, unit: str) -> dict | None:
        """Open metrics.json and return the checkpoint this run continues from (None: a fresh start).

        ``resumed`` is the ``--resume-from`` checkpoint. A restarted worker group continues from this run's
        newest checkpoint instead (none yet: the group starts over), whose model options are settled in args;
        the log says so, at which ``unit`` (epoch, iteration)."""
        def starting_point() -> tuple[dict | None, dict]:
            restart = run_checkpoint_in(self.args.logs_dir, self.runtime.run_id) if self.runtime.restart else None
            continuing = restart is not None or resumed is not None
            return restart, read_run_metrics(self.args.logs_dir) if continuing else {}

        restart, records = self.runtime.share(starting_point)
        self.metrics = open_metrics(self.args, self.runtime, records)
        if restart is not None:
            resolve_model_options(self.args, restart, self.args.logs_dir)
            print(f"worker group restarted (restart {self.runtime.restart}): continuing this run from "
                  f"{os.path.join(self.args.logs_dir, CHECKPOINT)} at {unit} {restart['epoch']}")
            return restart
        return resumed

    def record(self, key: str) -> CostMeter:
        """Start the record ``key`` of metrics.json: :attr:`cost` measures it from now on."""
        self.cost = record_meter(self.metrics, key, self.runtime.device)
        return self.cost

    def finish(self, key: str, record: dict) -> None:
        """Write the finished record ``key`` with its cost (the seconds of any interrupted attempt included)."""
        finish_record(self.metrics, key, {**record, "cost": self.cost.summary()})

    def save(self, state: dict, is_best: bool) -> None:
        """Write ``state`` as checkpoint.pth.tar (rank 0), with every rank's RNG states (each rank's augmentations
        drew its own numbers), the run's id and the model options; copy it to model_best.pth.tar when
        ``is_best``. Timed as the phase ``checkpoint``."""
        rng_states = self.runtime.gather(rng_state())
        with self.cost.phase("checkpoint"):
            if self.runtime.is_main:
                save_checkpoint({**state, "rng": rng_states[0], "rng_ranks": rng_states,
                                 "run_id": self.runtime.run_id, "config": model_config(self.args)},
                                os.path.join(self.args.logs_dir, CHECKPOINT), is_best=is_best)

    def restore(self, checkpoint: dict, optimizer: torch.optim.Optimizer) -> None:
        """Put back the optimiser and this rank's RNG states of a checkpoint being continued: its own when it was
        saved by as many ranks, else rank 0's."""
        optimizer.load_state_dict(checkpoint["optimizer"])
        per_rank = checkpoint.get("rng_ranks") or []
        state = per_rank[self.runtime.rank] if len(per_rank) == self.runtime.world_size else checkpoint.get("rng")
        if state:
            set_rng_state(state)
