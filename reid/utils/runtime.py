"""Devices, seeding, DataParallel / DistributedDataParallel and the scripts' error handling."""
from __future__ import annotations

import contextlib
import errno
import itertools
import os
import random
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from reid.utils.elastic import POLL_SECONDS, join_worker_group
from reid.utils.errors import PAUSE_STATUS, Pause, UserError, first_line
from reid.utils.logging import print_error, stop_logging
from reid.utils.logs_dir import release_logs_dir
from reid.utils.osutils import storage_error, storage_fault

T = TypeVar("T")
GLOO_FAILURES = ("/gloo/", "pair closure")
# Where torch.distributed's collectives and DDP's own communication raise from.
TORCH_DISTRIBUTED = (os.path.join("torch", "distributed", ""),
                     os.path.join("torch", "nn", "parallel", "distributed.py"))
# What the system answers a write that does not fit: no space left, a file-size limit, a quota.
STORAGE_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
# torch's own default is 30 minutes: a lost rank would keep the others waiting that long.
DEFAULT_DIST_TIMEOUT = 300
# Keys of the process group's store by which the other ranks wait for rank 0 (see Runtime._meet_rank0).
PULSE_KEY = "ssg/rank0/pulse"
ENDED_KEY = "ssg/rank0/ended"
ARRIVED_KEY = "ssg/rank0/arrived/"
# Rank 0 beats this often: a tenth of --dist-timeout when that is shorter. A waiting rank looks every POLL_SECONDS
# at most (each wait costs the group up to that much after rank 0 arrives).
PULSE_SECONDS = 1.0
# Numbers the waits for rank 0 of this process: every rank waits as often, in the same order, whatever Runtime
# object (the run's, an evaluator's) it waits through.
_MEETINGS = itertools.count(1)


@dataclass
class Runtime:
    """Where this process computes: a device, its rank among ``world_size`` DDP processes (1 without
    torchrun) and, for DataParallel, the GPU ids to spread batches over. Under torchrun, also the run's id
    and how many worker groups of the run came before this one (``restart``, see :mod:`reid.utils.elastic`)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    gpu_ids: list[int] = field(default_factory=list)
    run_id: str = ""
    restart: int = 0
    dist_timeout: float = DEFAULT_DIST_TIMEOUT

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Every rank waits for the others here, for rank 0 as long as it works alone (writing a checkpoint)."""
        if self.distributed:
            self._meet_rank0()
            dist.barrier()

    def share(self, make: Callable[[], T]) -> T:
        """``make()`` computed on rank 0 and sent to every rank, so that decisions taken from files (which
        another machine may not see, or see changed) or from one rank's work are the same on all ranks. The
        other ranks wait for it however long it takes (:meth:`_meet_rank0`)."""
        if not self.distributed:
            return make()
        value = [make() if self.is_main else None]
        self._meet_rank0()
        dist.broadcast_object_list(value, src=0)
        return value[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` in rank order on rank 0 (an empty list elsewhere), once rank 0 comes."""
        if not self.distributed:
            return [value]
        self._meet_rank0()
        values = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, values, dst=0)
        return values or []

    def _meet_rank0(self) -> None:
        """Before a collective that may follow work of rank 0 alone: rank 0 marks in the store that it came,
        the other ranks wait for the mark. A collective would give up after ``dist_timeout`` seconds of rank 0's
        work; this wait lasts as long as rank 0's heartbeat (:func:`start_heartbeat`) goes on, and ends with an
        error once it has stood still for ``dist_timeout`` seconds (rank 0 died or lost its machine) or rank 0
        ended its run. Every rank must call it as often, in the same order (as any collective)."""
        store = dist.distributed_c10d._get_default_store()
        arrived = f"{ARRIVED_KEY}{next(_MEETINGS)}"
        if self.is_main:
            store.set(arrived, "")
            return
        pause, beats, beaten_at = 0.001, -1, time.monotonic()
        while True:
            ended = store.check([ENDED_KEY])  # read first: rank 0 marks its arrival before it ends
            if store.check([arrived]):
                return
            if ended:
                raise dist.DistError("rank 0 ended its run")
            now, beat = time.monotonic(), store.add(PULSE_KEY, 0)
            if beat != beats:
                beats, beaten_at = beat, now
            elif now - beaten_at > self.dist_timeout:
                raise dist.DistError(f"rank 0 gave no sign of life for {self.dist_timeout:g} s")
            time.sleep(pause)
            pause = min(2 * pause, POLL_SECONDS)


def start_heartbeat(dist_timeout: float) -> None:
    """On rank 0 of an initialised process group: raise a counter in the group's store from a thread of its own,
    every :data:`PULSE_SECONDS` (or a tenth of ``dist_timeout``), for as long as the process lives; the other
    ranks read it while they wait for rank 0 (:meth:`Runtime._meet_rank0`). The thread has a store client of its
    own: a store operation waiting on the main thread holds the shared one."""
    store = dist.distributed_c10d._get_default_store().clone()
    seconds = _pulse_seconds(dist_timeout)

    def beat() -> None:
        while True:
            time.sleep(seconds)
            try:
                store.add(PULSE_KEY, 1)
            except (dist.DistError, RuntimeError):
                return  # the store went with the process group; the waiting ranks' own reads fail as well

    threading.Thread(target=beat, name="rank0-heartbeat", daemon=True).start()


def _pulse_seconds(dist_timeout: float) -> float:
    return min(PULSE_SECONDS, dist_timeout / 10)


def _end_rank0() -> None:
    """Rank 0 leaves its run (finished, stopped or failed): the ranks waiting for it stop waiting."""
    if dist.get_rank() == 0 and dist.get_world_size() > 1:
        # a store gone already: the waiting ranks find that out themselves
        with contextlib.suppress(dist.DistError, RuntimeError):
            dist.distributed_c10d._get_default_store().set(ENDED_KEY, "")


def launched_world_size() -> int:
    """The number of processes torchrun started for this run (``WORLD_SIZE``), 1 without torchrun; known before
    the process group is set up, so that options can be checked against it first."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The states of Python's, numpy's and torch's global generators, as plain lists and tensors (a checkpoint
    holding them loads with ``weights_only=True``)."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": [name, torch.from_numpy(key.astype(np.int64)), pos,
                                                   has_gauss, gauss], "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])


def init_runtime(gpu_devices: str | None, dist_timeout: float = DEFAULT_DIST_TIMEOUT) -> Runtime:
    """DDP when launched by torchrun (NCCL on GPU, gloo on CPU), else one process on the CPU, one GPU or
    DataParallel over ``gpu_devices`` (default: every visible GPU).

    Under DDP every collective, and the set-up itself, fails after ``dist_timeout`` seconds instead of waiting
    for a rank that died or hangs, except where the ranks wait for rank 0's work alone (:meth:`Runtime.share`,
    ``barrier``, ``gather``): there they wait while rank 0's heartbeat goes on. A group that torchrun restarted
    sets up in a namespace of torchrun's store of its own (:func:`reid.utils.elastic.join_worker_group`)."""
    if gpu_devices and gpu_devices != "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_devices
    use_cuda = gpu_devices != "cpu" and torch.cuda.is_available()
    world_size = launched_world_size()
    if world_size > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local_rank)
            torch.backends.cudnn.benchmark = True
        rank, timeout = int(os.environ["RANK"]), timedelta(seconds=dist_timeout)
        group = join_worker_group(rank, world_size, timeout)
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout, rank=rank, world_size=world_size,
                                store=group.store if group else None)
        if rank == 0:
            start_heartbeat(dist_timeout)
        device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        return Runtime(device, rank=rank, world_size=world_size, run_id=group.run_id if group else "",
                       restart=group.restart if group else 0, dist_timeout=dist_timeout)
    if use_cuda:
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
        return Runtime(torch.device("cuda", 0), gpu_ids=list(range(torch.cuda.device_count())))
    return Runtime(torch.device("cpu"))


def to_device(tensor_or_model, runtime: Runtime):
    """Move a model or an image batch to the runtime's device, channels_last on CUDA."""
    if runtime.device.type == "cuda" and (isinstance(tensor_or_model, nn.Module) or tensor_or_model.dim() == 4):
        return tensor_or_model.to(runtime.device, memory_format=torch.channels_last, non_blocking=True)
    return tensor_or_model.to(runtime.device)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` on ``device``: bf16 where the GPU supports it, else fp16; None (no
    mixed precision) off CUDA."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model


def run_main(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> int:
    """Run a script's ``main``; a UserError (or a failure in a data worker caused by one) becomes one line
    ``error: ...`` on stderr and exit status 2; Ctrl-C exits 130 after saying so; a :class:`Pause` (the run waits
    for the user) prints its message and exits 3. ``--debug`` re-raises.

    Under DDP the line names the rank (``error: rank 1: ...``), and a rank whose collective failed because
    another rank died, raised or stopped answering (``--dist-timeout``) also stops with one line, exit status 1:
    every rank ends, each saying why, rather than waiting or printing a traceback of someone else's failure.
    """
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        main(argv)
    except KeyboardInterrupt:
        print_error("interrupted: stopped; the last saved checkpoint is kept")
        return 130
    except Pause as pause:
        print_error(f"{_rank_prefix()}{pause}")
        return PAUSE_STATUS
    except Exception as exc:
        failure = _one_line_failure(exc)
        if debug or failure is None:
            raise
        status, message = failure
        print_error(f"error: {_rank_prefix()}{message}")
        return status
    finally:
        stop_logging()
        release_logs_dir()
        if dist.is_available() and dist.is_initialized():
            _end_rank0()
            dist.destroy_process_group()
    return 0


def _one_line_failure(exc: Exception) -> tuple[int, str] | None:
    """(exit status, message) of a failure told in one line; None for a bug, whose traceback is wanted."""
    if isinstance(exc, UserError) or "UserError" in str(exc):
        return 2, _last_line(exc)
    fault = storage_fault(exc)
    if fault is not None and fault.errno in STORAGE_FULL:  # a write outside write_atomically (a folder made)
        return 2, str(storage_error(exc, fault.filename or "a file", "the last saved checkpoint is kept"))
    if launched_world_size() > 1 and _is_communication_failure(exc):
        return 1, (f"lost the other ranks ({_first_sentence(exc)}): another rank died, raised or did not answer "
                   "within --dist-timeout; the last saved checkpoint is kept")
    return None


def _is_communication_failure(exc: Exception) -> bool:
    """torch's errors of the process group and its store; gloo's, plain RuntimeErrors that either name gloo's
    transport (a peer's connection closed or reset, a receive timed out) or tell that a timeout closed the
    connection; and any RuntimeError raised by torch.distributed's own code (a collective, DDP's broadcasts)."""
    if isinstance(exc, dist.DistError):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    raised_by_torch_distributed = bool(frames) and any(part in frames[-1].filename for part in TORCH_DISTRIBUTED)
    return raised_by_torch_distributed or any(marker in str(exc) for marker in GLOO_FAILURES)


def _rank_prefix() -> str:
    return f"rank {os.environ.get('RANK', '0')}: " if launched_world_size() > 1 else ""


def _first_sentence(exc: BaseException) -> str:
    """gloo's message without its source location and its advice: ``Read error [ip]:port: Connection reset by
    peer``."""
    return re.sub(r"^\[[^\]]*\]\s*", "", first_line(exc)).split(". ")[0].rstrip(".")


def _last_line(exc: BaseException) -> str:
    """A UserError re-raised by a DataLoader worker carries the worker's traceback; keep its message."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    message = lines[-1] if lines else type(exc).__name__
    prefix = "reid.utils.errors.UserError: "
    return message[len(prefix):] if message.startswith(prefix) else message
