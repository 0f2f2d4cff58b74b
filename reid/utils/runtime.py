"""Devices, seeding, DataParallel / DistributedDataParallel and the scripts' error handling."""
from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from reid.models import group_batchnorm
from reid.utils.distributed import convert_sync_batchnorm
from reid.utils.errors import UserError
from reid.utils.logging import stop_logging


@dataclass
class Runtime:
    """Where this process computes: a device, its rank among ``world_size`` DDP processes (1 without
    torchrun) and, for DataParallel, the GPU ids to spread batches over."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    gpu_ids: list[int] = field(default_factory=list)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def init_runtime(gpu_devices: str | None) -> Runtime:
    """DDP when launched by torchrun (NCCL on GPU, gloo on CPU), else one process on the CPU, one GPU or
    DataParallel over ``gpu_devices`` (default: every visible GPU)."""
    if gpu_devices and gpu_devices != "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_devices
    use_cuda = gpu_devices != "cpu" and torch.cuda.is_available()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local_rank)
            torch.backends.cudnn.benchmark = True
        dist.init_process_group("nccl" if use_cuda else "gloo")
        device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        return Runtime(device, rank=dist.get_rank(), world_size=dist.get_world_size())
    if use_cuda:
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
        return Runtime(torch.device("cuda", 0), gpu_ids=list(range(torch.cuda.device_count())))
    return Runtime(torch.device("cpu"))


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
    ``error: ...`` on stderr and exit status 2; Ctrl-C exits 130 after saying so. ``--debug`` re-raises."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        main(argv)
    except UserError as exc:
        if debug:
            raise
        print(f"error: {_last_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: stopped; the last saved checkpoint is kept", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug or "UserError" not in str(exc):
            raise
        print(f"error: {_last_line(exc)}", file=sys.stderr)
        return 2
    finally:
        stop_logging()
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


def _last_line(exc: BaseException) -> str:
    """A UserError re-raised by a DataLoader worker carries the worker's traceback; keep its message."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    message = lines[-1] if lines else type(exc).__name__
    prefix = "reid.utils.errors.UserError: "
    return message[len(prefix):] if message.startswith(prefix) else message

