"""What a run costs and where it ran: seconds per phase and peak memory of every record of metrics.json.

The released SSG publishes no running time, and toolboxes quote totals without naming the machine. Every
record a stage writes (an adaptation iteration, a source epoch, an evaluation) therefore carries its own
``cost``, measured by one :class:`CostMeter`::

    "cost": {"seconds": {"features": .., "grouping": .., "training": .., "evaluation": .., "checkpoint": ..,
                         "total": ..},
             "peak_rss_gib": .., "peak_gpu_gib": .. (CUDA only), "attempts": 1}

and metrics.json's ``run`` list holds one :func:`run_header` per start of the run (a resumed run adds its own).
``python -m reid.report`` turns both into a cost table per stage.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator

import torch

from reid.utils.data.loaders import available_cores
from reid.utils.records import MetricsLog
from reid.utils.runtime import Runtime, amp_dtype

# metrics.json's entry for the figures of a record not finished yet: what an interrupted run leaves behind.
PARTIAL_KEY = "cost_partial"
GIB = 2**30
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int:
    """This process's resident set size now, in bytes; 0 where ``/proc`` is missing (macOS)."""
    try:
        with open("/proc/self/statm") as stream:
            return int(stream.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


def rss_high_water() -> int:
    """The largest resident set size this process has had since it started, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux counts KiB


class CostMeter:
    """Seconds per named phase and peak memory of one record, plus what an interrupted attempt at it cost.

    Seconds: a phase entered twice adds up; ``total`` is the wall-clock from the meter's creation to
    :meth:`summary`, so it also holds what no phase covers (plots, logs). On CUDA the device is synchronised at
    the end of each phase, since the kernels a phase queued belong to it; nowhere else (never per batch).

    ``peak_rss_gib``: the largest resident set size of this process during the record (data-loader workers are
    processes of their own and are not counted). The kernel keeps only the process's lifetime peak, so when
    the record raised it (the first iteration usually does) the figure is exact; otherwise it is the largest
    size seen at the ends of the record's phases, which may miss a short spike inside a phase.
    ``peak_gpu_gib``: the most memory allocated by tensors on the device during the record (the allocator's
    peak is reset when the meter starts).

    ``carried`` is a :meth:`summary` left by an interrupted attempt at the same record: its seconds are added
    phase by phase, its peaks taken into the maxima, and ``attempts`` counts it. ``save`` receives the summary
    at the end of every phase, also a phase that raised (Ctrl-C), so that an interrupted run loses at most
    the phase a hard kill cuts.
    """

    def __init__(self, device: torch.device | None = None, carried: dict | None = None,
                 save: Callable[[dict], None] | None = None, clock: Callable[[], float] = time.perf_counter):
        self.device = device if device is not None and device.type == "cuda" else None
        self.carried = carried or {}
        self.save = save
        self.clock = clock
        self.seconds: dict[str, float] = {}
        self.start = clock()
        self.rss_high_water_at_start = rss_high_water()
        self.rss_seen = current_rss()
        if self.device is not None:
            torch.cuda.reset_peak_memory_stats(self.device)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name``."""
        start = self.clock()
        try:
            yield
        except BaseException:
            self._end_phase(name, start)  # no synchronisation: the device may be what failed
            raise
        if self.device is not None:
            torch.cuda.synchronize(self.device)
        self._end_phase(name, start)

    def _end_phase(self, name: str, start: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + self.clock() - start
        self.rss_seen = max(self.rss_seen, current_rss())
        if self.save is not None:
            self.save(self.summary())

    def summary(self) -> dict:
        """The record's ``cost`` entry so far, the carried attempt included."""
        seconds = {name: value for name, value in self.carried.get("seconds", {}).items() if name != "total"}
        for name, value in self.seconds.items():
            seconds[name] = seconds.get(name, 0.0) + value
        seconds["total"] = self.carried.get("seconds", {}).get("total", 0.0) + self.clock() - self.start
        cost = {"seconds": {name: round(value, 3) for name, value in seconds.items()},
                "peak_rss_gib": self._peak("peak_rss_gib", self._peak_rss())}
        if self.device is not None:
            cost["peak_gpu_gib"] = self._peak("peak_gpu_gib", torch.cuda.max_memory_allocated(self.device))
        cost["attempts"] = self.carried.get("attempts", 0) + 1
        return cost

    def _peak_rss(self) -> int:
        high_water = rss_high_water()
        seen = max(self.rss_seen, current_rss())
        return max(high_water, seen) if high_water > self.rss_high_water_at_start else seen

    def _peak(self, key: str, own_bytes: int) -> float:
        return round(max(own_bytes / GIB, self.carried.get(key) or 0.0), 3)


def record_meter(metrics: MetricsLog, key: str, device: torch.device) -> CostMeter:
    """A meter for the record ``key`` of ``metrics``. It carries in the figures an interrupted attempt at the
    same record left under :data:`PARTIAL_KEY`, and leaves its own there at the end of every phase."""
    partial = metrics.data.get(PARTIAL_KEY) or {}

    def save(cost: dict) -> None:
        metrics[PARTIAL_KEY] = {"record": key, **cost}

    return CostMeter(device, partial if partial.get("record") == key else None, save)


def finish_record(metrics: MetricsLog, key: str, value: object) -> None:
    """Write the finished record ``key``, whose cost now holds the figures of any interrupted attempt."""
    metrics.update({key: value}, drop=(PARTIAL_KEY,))


def cpu_name() -> str:
    """The CPU model, as /proc/cpuinfo names it where there is one."""
    try:
        with open("/proc/cpuinfo") as stream:
            for line in stream:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def run_header(args: argparse.Namespace, runtime: Runtime) -> dict:
    """Where and how this run computes: what its seconds depend on besides the options in args.json."""
    device = runtime.device
    cuda = device.type == "cuda"
    amp = amp_dtype(device) if args.amp else None
    gpus = (runtime.world_size if runtime.distributed else max(1, len(runtime.gpu_ids))) if cuda else 0
    return {"started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "device": str(device), "device_name": torch.cuda.get_device_name(device) if cuda else cpu_name(),
            "gpus": gpus, "cpu_name": cpu_name(), "cpus": available_cores(), "threads": torch.get_num_threads(),
            "workers": args.workers, "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
            "amp": str(amp).removeprefix("torch.") if amp else None,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "processes": runtime.world_size, "bn_group_size": args.bn_group_size, "sync_bn": args.sync_bn}


def describe_header(header: dict) -> str:
    """One line of a :func:`run_header`, for the log and the report."""
    if header.get("gpus"):
        device = f"{header['gpus']} x {header['device_name']}" if header["gpus"] > 1 else header["device_name"]
        device += f", {header['cpus']} CPU cores"
        tf32 = "on" if header.get("tf32_matmul") else "off", "on" if header.get("tf32_cudnn") else "off"
        precision = (f"AMP {header['amp']}" if header.get("amp") else "fp32") + \
            f" (TF32 matmul {tf32[0]}, cuDNN {tf32[1]})"
        version = f"torch {header['torch']} (CUDA {header.get('cuda')})"
    else:
        device = f"CPU {header.get('cpu_name', '?')}, {header['cpus']} cores, {header.get('threads', '?')} threads"
        precision = "fp32 (TF32 and --amp act on CUDA only)"
        version = f"torch {header['torch']}"
    processes = header.get("processes", 1)
    return (f"{device}, {header.get('workers', '?')} loader workers; {version}; {precision}; "
            f"{processes} process{'es' if processes > 1 else ''}; {_batchnorm(header)}")


def _batchnorm(header: dict) -> str:
    if header.get("bn_group_size"):
        return f"BatchNorm over groups of {header['bn_group_size']} images"
    if header.get("processes", 1) > 1:
        return "BatchNorm over the global batch (synchronised)" if header.get("sync_bn") else \
            "BatchNorm per process"
    return "BatchNorm per GPU (DataParallel)" if header.get("gpus", 0) > 1 else "BatchNorm over the batch"
