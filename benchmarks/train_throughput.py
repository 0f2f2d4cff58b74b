"""Benchmark: images per second of one SSG training step (docs/algorithm.md, grouping step 6) in four numeric modes.

A step is what ``reid.trainers.SSGTrainer`` does per batch: forward of the part-pooling ResNet
(``num_split=2``, 2048-d embedding, no classifier), the four block-mined triplet terms
(``reid.trainers.part_triplet_terms``, margin 0.5, 4 images per identity), backward and an SGD step
(lr 6e-5, momentum 0.9, weight decay 5e-4), on random images. The modes are fp32 as PyTorch runs it by default
(cuDNN convolutions in TF32 on Ampere and later GPUs), true fp32 (TF32 off for convolutions and matrix
products: the baseline that speed-ups from reduced precision are honestly measured against), AMP (bf16
autocast where the GPU supports it, else fp16 with a GradScaler), channels_last memory format, and AMP with
channels_last. On the CPU only fp32 runs unless ``--force`` (AMP is then bf16 autocast on the CPU; TF32 does
not exist there). cuDNN autotuning is on for every mode.

With ``--dataset NAME`` it also times the data pipeline alone (JPEG decoding, the SSG train transform,
collation) through the project's identity loader with ``--workers`` processes, so the two rates show whether
decoding bounds training; and the workers' half of it on a GPU, where they stop at the resized, flipped uint8
images and the GPU converts, normalises and erases them (``SplitTransform.on_host``). The same for the
evaluation transform that feature extraction uses.

Run from the repository root: ``python -m benchmarks.train_throughput [--arch resnet50] [--batch-size 128]``.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from reid import datasets, models
from reid.arguments import add_workers_arg
from reid.loss import TripletLoss
from reid.trainers import part_triplet_terms
from reid.utils.data.loaders import identity_loader
from reid.utils.data.transforms import test_transform, train_transform
from reid.utils.errors import UserError
from reid.utils.runtime import Runtime, run_main

NUM_SPLIT = 2
NUM_INSTANCES = 4


@dataclass(frozen=True)
class Mode:
    name: str
    amp: bool
    channels_last: bool
    tf32: bool = True


DEFAULT_FP32 = Mode("fp32 (default)", amp=False, channels_last=False)
TRUE_FP32 = Mode("fp32, TF32 off", amp=False, channels_last=False, tf32=False)
MODES = (
    DEFAULT_FP32,
    TRUE_FP32,
    Mode("AMP", amp=True, channels_last=False),
    Mode("channels_last", amp=False, channels_last=True),
    Mode("AMP + channels_last", amp=True, channels_last=True),
)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available; use --device cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def amp_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def tf32_off(off: bool) -> Iterator[None]:
    """When ``off``, no TF32 in cuDNN convolutions and CUDA matrix products for the block (then the settings
    are restored); otherwise PyTorch's defaults as they are."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    if off:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def random_batch(batch_size: int, height: int, width: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and (B, S+1) labels made of identity blocks of 4, the shape of an SSG batch."""
    images = torch.randn(batch_size, 3, height, width, device=device)
    identities = torch.arange(batch_size // NUM_INSTANCES, device=device).repeat_interleave(NUM_INSTANCES)
    # Stripe clusters merge pairs of global clusters, so the three feature types mine different negatives.
    labels = torch.stack([identities, identities // 2, identities // 2], dim=1)
    return images, labels


def images_per_second(args: argparse.Namespace, device: torch.device, mode: Mode) -> float:
    """Time ``args.steps`` training steps after ``args.warmup`` untimed ones."""
    torch.manual_seed(0)
    model = models.create(args.arch, num_split=NUM_SPLIT, num_features=2048, pretrained=False).to(device)
    images, labels = random_batch(args.batch_size, args.height, args.width, device)
    if mode.channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    dtype = amp_dtype(device)
    triplet = TripletLoss(margin=0.5, mining="block", num_instances=NUM_INSTANCES)
    optimizer = torch.optim.SGD(model.parameters(), lr=6e-5, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=mode.amp and dtype == torch.float16)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=mode.amp):
            loss, _ = part_triplet_terms(triplet, model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    model.train()
    with tf32_off(not mode.tf32):
        for _ in range(args.warmup):
            step()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        synchronize(device)
    return args.steps * args.batch_size / (time.perf_counter() - start)


def loader_images_per_second(args: argparse.Namespace, transform: Callable) -> float:
    """Images per second that the identity loader delivers (decode + ``transform`` + collate), no model."""
    dataset = datasets.create(args.dataset, f"{args.data_dir}/{args.dataset}", verbose=False)
    loader = identity_loader(dataset.trainval, transform, Runtime(torch.device("cpu")), args.batch_size,
                             NUM_INSTANCES, args.workers, seed=0)
    batches = iter(loader)
    next(batches)  # worker start-up is not throughput
    count, start = 0, time.perf_counter()
    for _, _, labels, *_ in batches:
        count += len(labels)
    return count / (time.perf_counter() - start)


def runs_on(mode: Mode, device: torch.device, force: bool) -> bool:
    """Every mode runs on CUDA; on the CPU fp32 only, or with ``force`` every mode but TF32-off (a CPU has no
    TF32)."""
    return device.type == "cuda" or mode == DEFAULT_FP32 or (force and mode != TRUE_FP32)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (AMP dtype {amp_dtype(device)})"
    return f"CPU, {torch.get_num_threads()} threads"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-a", "--arch", default="resnet50", choices=models.names())
    parser.add_argument("-b", "--batch-size", type=int, default=None, help="default 128 on CUDA, 32 on CPU")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on CUDA, 3 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default: 5 CUDA, 1 CPU)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--force", action="store_true", help="also run AMP and channels_last on the CPU")
    parser.add_argument("--dataset", default=None, choices=datasets.names(), help="also time the data pipeline")
    parser.add_argument("--data-dir", default="data")
    add_workers_arg(parser)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace, device: torch.device) -> None:
    on_cuda = device.type == "cuda"
    args.batch_size = args.batch_size or (128 if on_cuda else 32)
    args.steps = args.steps if args.steps is not None else (20 if on_cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (5 if on_cuda else 1)
    if args.batch_size < NUM_INSTANCES or args.batch_size % NUM_INSTANCES:
        raise UserError(f"--batch-size {args.batch_size} must be a positive multiple of {NUM_INSTANCES}")
    if args.steps < 1 or args.warmup < 0:
        raise UserError(f"--steps {args.steps} must be >= 1 and --warmup {args.warmup} >= 0")
    if args.width < 1:
        raise UserError(f"--width {args.width} must be a positive number of pixels")
    models.check_num_split(args.height, NUM_SPLIT)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = pick_device(args.device)
    check_args(args, device)
    torch.backends.cudnn.benchmark = True
    print(f"{args.arch}, batch {args.batch_size} of {args.height}x{args.width}, {args.steps} timed steps "
          f"after {args.warmup} warm-up, on {describe_device(device)}")
    if device.type == "cuda":
        print("fp32 (default) is PyTorch's default: cuDNN convolutions in TF32 "
              f"(allow_tf32 {torch.backends.cudnn.allow_tf32}), matrix products in fp32 "
              f"(allow_tf32 {torch.backends.cuda.matmul.allow_tf32}); 'TF32 off' turns both off")
    rates = {}
    for mode in MODES:
        if runs_on(mode, device, args.force):
            rates[mode] = images_per_second(args, device, mode)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(f"{'mode':<22}{'img/s':>10}{'vs fp32':>10}{'vs true fp32':>14}")
    for mode in MODES:
        if mode not in rates:
            print(f"{mode.name:<22}{'n/a on CPU':>10}")
            continue
        ratios = [f"{rates[mode] / rates[base]:.2f}x" if base in rates else "" for base in (DEFAULT_FP32, TRUE_FP32)]
        print(f"{mode.name:<22}{rates[mode]:>10.1f}{ratios[0]:>10}{ratios[1]:>14}")
    if args.dataset:
        print(f"data pipeline alone ({args.workers} workers, {args.dataset}, one epoch), img/s:")
        for name, transform in (("training", train_transform(args.height, args.width, crop="none")),
                                ("feature extraction", test_transform(args.height, args.width))):
            whole = loader_images_per_second(args, transform)
            half = loader_images_per_second(args, transform.on_host)
            print(f"  {name:<20}{whole:>8.1f} whole transform in the workers, {half:.1f} when the GPU "
                  f"normalises{' and erases' if name == 'training' else ''} ({half / whole:.2f}x)")


if __name__ == "__main__":
    raise SystemExit(run_main(main))
