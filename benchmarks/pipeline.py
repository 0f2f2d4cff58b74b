"""Benchmark: one whole SSG iteration (ICCV 2019; docs/algorithm.md) at Market-1501 scale, phase by phase.

Data: synthetic JPEGs with Market-1501's counts (``--scale 1``): a target of N = 12,936 training images of 751
identities, 3,368 queries and 15,913 gallery images (2,793 of them distractors), in the Market-1501 layout and
file names, and a source training folder of M = 16,522 images of 702 identities (DukeMTMC-reID's), 128x64 crops
of the project's generator (``reid.datasets.synthetic``: the target in ``synth_b``'s style, the source in
``synth_a``'s). They are rendered in parallel into ``--data-dir`` and reused by the next run at the same scale.
``--scale`` multiplies every count, for CPU runs and tests.

The model is a randomly initialised ResNet-50 (no ImageNet weights on an offline machine) at 256x128, batch 128,
through the project's own code: ``extract_features`` (flip sum, features kept on the device), the grouping as
``selftraining.py`` runs it (distance, eps and DBSCAN for the three feature types; timed at the first iteration,
where eps is computed, and at a later one, where it is frozen), the ``SSGTrainer`` loop with the identity loader,
and the ``Evaluator``. Random weights give meaningless features, so the clusters may be degenerate; the training
epochs are therefore timed on the generator's true identities (751 at Market scale: 23 batches of 32 x 4,
about what the clusters of a real run give). ``--epochs`` E are measured, then the first epoch of the next
iteration (a new loader, whose workers start, on the warmed-up model: every iteration builds one for its new
clusters); 70 are projected as that epoch plus 69 later ones, and the very first epoch's extra time (cuDNN's
autotuning, the first kernels) is counted once per run. The loader alone and the model alone (the same trainer on
batches already on the device) are timed too, and on CUDA the GPU's busy share of one more epoch is read from
the profiler's kernel trace.

Printed: seconds per phase, with the peak GPU memory of each; the projected wall time of one iteration
(70 epochs) and of a 30-iteration run (the before-adaptation evaluation included); the targets on one GPU.

Run from the repository root::

    python -m benchmarks.pipeline                    # Market scale, default precision, on the GPU if any
    python -m benchmarks.pipeline --amp              # mixed precision (channels_last is on for CUDA anyway)
    python -m benchmarks.pipeline --scale 0.01 -a resnet18 --height 64 --width 32 -b 16 --device cpu
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from benchmarks.train_throughput import amp_dtype, pick_device, random_batch, synchronize
from reid import datasets, models
from reid.arguments import REPO_DIR, add_workers_arg
from reid.cluster import count_clusters
from reid.datasets.base import MARKET_STYLE_FOLDERS, parse_image_folder, relabel
from reid.datasets.market1501 import Market1501
from reid.datasets.pedestrians import DomainStyle, Identity, Renderer, make_identities
from reid.datasets.synthetic import JPEG_QUALITY, domain_style
from reid.evaluators import Evaluator
from reid.experiment import wrap_model
from reid.feature_extraction import extract_features
from reid.paper import GROUPING
from reid.trainers import SSGTrainer
from reid.utils.data.loaders import available_cores, identity_loader
from reid.utils.data.transforms import train_transform
from reid.utils.errors import UserError
from reid.utils.records import read_json, write_json
from reid.utils.runtime import Runtime, run_main, to_device
from reid.utils.serialization import save_checkpoint
from selftraining import self_similarity_grouping

DATA_VERSION = 1
MARKER = "pipeline_data.json"
NUM_CAMERAS = 6
NUM_SPLIT = 2
NUM_INSTANCES = 4
EPOCHS_PER_ITERATION = 70
ITERATIONS = 30
NEXT_ITERATION_EPOCH = "epoch 0, next iteration"
FIRST_ITERATION = ", first iteration"
IMAGES_PER_TASK = 200
# Seeds of the two domains' people and cameras, and of the image plan (who is seen by which camera).
DOMAIN_SEEDS = {"target": 11, "source": 12}
PLAN_SEED = 13
# The targets on one H100/H200: seconds per iteration (default precision, AMP), minutes per run,
# the GPU's busy share of a training epoch and seconds of grouping for the three feature types.
TARGET_ITERATION_S = {False: 90.0, True: 60.0}
TARGET_RUN_MIN = 45.0
TARGET_BUSY = 0.85
TARGET_GROUPING_S = 1.0
# Chrome-trace categories of work on the GPU.
GPU_CATEGORIES = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})


@dataclass(frozen=True)
class Counts:
    """Identities and images of the benchmark's data (Market-1501's, DukeMTMC-reID's as the source)."""

    target_ids: int = 751
    target_images: int = 12_936
    test_ids: int = 750
    query: int = 3_368
    gallery: int = 15_913
    distractors: int = 2_793
    source_ids: int = 702
    source_images: int = 16_522

    def scaled(self, scale: float) -> Counts:
        """Every count times ``scale``, rounded; raises UserError when the result cannot form the layout."""
        if not scale > 0:
            raise UserError(f"--scale {scale}: expected a number > 0")
        counts = Counts(**{name: max(1, round(value * scale)) for name, value in asdict(self).items()})
        people_in_gallery = counts.gallery - counts.distractors
        if (counts.target_ids < 2 or counts.source_ids < 2 or counts.target_images < 2 * counts.target_ids
                or counts.source_images < 2 * counts.source_ids
                or not counts.test_ids <= counts.query <= NUM_CAMERAS * counts.test_ids
                or people_in_gallery < 2 * counts.test_ids
                or counts.target_ids + counts.test_ids > 9999):
            raise UserError(f"--scale {scale}: gives {counts}, which cannot form a Market-1501 layout (two "
                            "identities at least, two images of each, a query with a gallery match, 4-digit "
                            "pids); use a scale from about 0.005 to 6")
        return counts


@dataclass(frozen=True)
class ImageSpec:
    """One image to render: where, named how, and who (None: background only, a distractor)."""

    folder: str
    pid: int
    camera: int
    frame: int
    person: Identity | None

    @property
    def fname(self) -> str:
        """The Market-1501 name ``PPPP_cCsS_FFFFFF_NN.jpg``."""
        return f"{self.pid:04d}_c{self.camera + 1}s1_{self.frame:06d}_01.jpg"


def _style(domain: str) -> DomainStyle:
    return domain_style("synth_b" if domain == "target" else "synth_a")


def _people(domain: str, num: int) -> list[Identity]:
    return make_identities(np.random.default_rng(DOMAIN_SEEDS[domain]), list(range(1, num + 1)), _style(domain))


class _Plan:
    """The images of one domain, numbered in order (the frame field of their names)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.specs: list[ImageSpec] = []

    def spread(self, total: int, parts: int) -> np.ndarray:
        """``total`` split into ``parts`` counts differing by at most one, the larger ones at random places."""
        counts = np.full(parts, total // parts)
        counts[self.rng.permutation(parts)[: total % parts]] += 1
        return counts

    def cameras(self, count: int) -> np.ndarray:
        """``count`` distinct cameras (at most all of them) in a random order."""
        return self.rng.choice(NUM_CAMERAS, size=min(count, NUM_CAMERAS), replace=False)

    def add(self, folder: str, person: Identity | None, camera: int) -> None:
        pid = person.pid if person else 0
        self.specs.append(ImageSpec(folder, pid, int(camera), len(self.specs) + 1, person))

    def training_images(self, people: list[Identity], total: int) -> None:
        """``total`` images of ``people``, each seen by 2..6 cameras in turn."""
        for person, count in zip(people, self.spread(total, len(people))):
            cameras = self.cameras(int(self.rng.integers(2, NUM_CAMERAS + 1)))
            for index in range(count):
                self.add(MARKET_STYLE_FOLDERS[0], person, cameras[index % len(cameras)])


def target_plan(counts: Counts) -> list[ImageSpec]:
    """The target's images: training identities 1..K, test identities after them (one query per camera that
    sees them, the rest in the gallery over two cameras at least) and background-only distractors (pid 0)."""
    people = _people("target", counts.target_ids + counts.test_ids)
    plan = _Plan(PLAN_SEED)
    plan.training_images(people[: counts.target_ids], counts.target_images)
    _, test_folder, query_folder = MARKET_STYLE_FOLDERS
    queries = plan.spread(counts.query, counts.test_ids)
    gallery = plan.spread(counts.gallery - counts.distractors, counts.test_ids)
    for person, num_queries, num_gallery in zip(people[counts.target_ids:], queries, gallery):
        cameras = plan.cameras(max(2, num_queries))
        for camera in cameras[:num_queries]:
            plan.add(query_folder, person, camera)
        for index in range(num_gallery):
            plan.add(test_folder, person, cameras[index % len(cameras)])
    for _ in range(counts.distractors):
        plan.add(test_folder, None, plan.rng.integers(NUM_CAMERAS))
    return plan.specs


def source_plan(counts: Counts) -> list[ImageSpec]:
    """The source's training images (the only source images SSG uses)."""
    plan = _Plan(PLAN_SEED + 1)
    plan.training_images(_people("source", counts.source_ids), counts.source_images)
    return plan.specs


def render_images(task: tuple[str, str, int, Sequence[ImageSpec]]) -> int:
    """Render and write one task's images (run in a pool process); returns how many were written.

    Every task rebuilds the domain's cameras from its seed and draws its images from its own stream, so the
    data do not depend on how the tasks are spread over processes.
    """
    domain, root, task_index, specs = task
    renderer = Renderer(np.random.default_rng([DOMAIN_SEEDS[domain], 0]), _style(domain), NUM_CAMERAS)
    renderer.rng = np.random.default_rng([DOMAIN_SEEDS[domain], 1, task_index])
    for spec in specs:
        pixels = renderer.person(spec.person, spec.camera) if spec.person else renderer.fragment(None, spec.camera)
        Image.fromarray(pixels).save(os.path.join(root, spec.folder, spec.fname), quality=JPEG_QUALITY)
    return len(specs)


def prepare_data(data_dir: str, counts: Counts, scale: float, processes: int) -> tuple[str, dict]:
    """The benchmark's data folder for ``scale``, generated unless a complete one is there; returns it and a
    record of the generation (reused or images, seconds, processes)."""
    root = os.path.join(os.path.abspath(data_dir), f"market_scale{scale:g}")
    marker = os.path.join(root, MARKER)
    expected = {"version": DATA_VERSION, "counts": asdict(counts)}
    if os.path.isfile(marker) and read_json(marker) == expected:
        return root, {"reused": True}
    if os.path.exists(root):  # an interrupted generation (no marker) or another version: start again
        shutil.rmtree(root)
    tasks = []
    for domain, specs in (("target", target_plan(counts)), ("source", source_plan(counts))):
        domain_root = os.path.join(root, domain)
        for folder in MARKET_STYLE_FOLDERS if domain == "target" else MARKET_STYLE_FOLDERS[:1]:
            os.makedirs(os.path.join(domain_root, folder))
        tasks += [(domain, domain_root, len(tasks) + start // IMAGES_PER_TASK, specs[start: start + IMAGES_PER_TASK])
                  for start in range(0, len(specs), IMAGES_PER_TASK)]
    print(f"generating {counts.target_images + counts.query + counts.gallery + counts.source_images:,} JPEGs "
          f"into {root} with {processes} processes ...", flush=True)
    start = time.perf_counter()
    # fork: a spawned process would import torch again (seconds each); the children use numpy and PIL only
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        written = sum(pool.imap_unordered(render_images, tasks))
    seconds = time.perf_counter() - start
    write_json(marker, expected)
    return root, {"reused": False, "images": written, "seconds": seconds, "processes": processes}


class Clock:
    """Wall time and peak GPU memory of named phases; the device is synchronised at both ends of a phase."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}
        self.peak_gib: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self.seconds[name] = time.perf_counter() - start
        if self.device.type == "cuda":
            self.peak_gib[name] = torch.cuda.max_memory_allocated(self.device) / 2**30


def busy_fraction(events: Sequence[dict], categories: frozenset[str], wall_us: float) -> float | None:
    """Share of ``wall_us`` covered by the union of the trace events of ``categories`` (Chrome trace format:
    ``cat``, ``ts`` and ``dur`` in microseconds); None when there is no such event."""
    intervals = sorted((event["ts"], event["ts"] + event["dur"]) for event in events
                       if event.get("cat") in categories and "dur" in event)
    if not intervals:
        return None
    covered, (start, stop) = 0.0, intervals[0]
    for begin, end in intervals[1:]:
        if begin > stop:
            covered += stop - start
            start, stop = begin, end
        else:
            stop = max(stop, end)
    return (covered + stop - start) / wall_us


def profiled_gpu_busy(run: Callable[[], object], device: torch.device) -> tuple[float | None, str]:
    """The GPU's busy share while ``run()`` runs, from the profiler's kernel trace, and a note on how it was
    measured. The profiler's CPU-side recording slows the launches, so the share is a lower bound."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with tempfile.TemporaryDirectory() as folder:
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
                start = time.perf_counter()
                run()
                synchronize(device)
                wall = time.perf_counter() - start
            trace = os.path.join(folder, "trace.json")
            profiler.export_chrome_trace(trace)
            with open(trace) as stream:
                events = json.load(stream)["traceEvents"]
    except (RuntimeError, OSError, ValueError, KeyError) as error:  # the profiler is optional here
        return None, f"profiler failed: {error}"
    share = busy_fraction(events, GPU_CATEGORIES, wall * 1e6)
    return share, "kernel trace of one more epoch" if share is not None else "the trace holds no GPU work"


def load_data(root: str) -> tuple[datasets.ReIDDataset, list]:
    """The target through the Market-1501 loader, and the source's training list."""
    target = datasets.create("market1501", os.path.join(root, "target"), verbose=False)
    source_train = os.path.join(root, "source", MARKET_STYLE_FOLDERS[0])
    return target, relabel(parse_image_folder(source_train, Market1501.name_pattern, Market1501.name_format))


class _Iteration:
    """What ``selftraining.self_similarity_grouping`` takes of a run, on the benchmark's model and data, with
    the paper's grouping options; its phases go to the benchmark's clock, each under the name given by
    :attr:`label`. Features are extracted (and timed) once and reused by a later grouping."""

    def __init__(self, model: torch.nn.Module, runtime: Runtime, source: list, target: datasets.ReIDDataset,
                 args: argparse.Namespace, clock: Clock):
        self.model, self.runtime, self.target, self.clock = model, runtime, target, clock
        self.source = argparse.Namespace(trainval=source)
        self.args = argparse.Namespace(**GROUPING, height=args.height, width=args.width, workers=args.workers,
                                       amp=args.amp, batch_size=args.batch_size)
        self.eps: list[float] | None = None
        self.rho = GROUPING["rho"]
        self.cost, self.label = self, ""
        self._features: dict[str, torch.Tensor] = {}

    def phase(self, name: str):
        return self.clock.phase(f"{name}{self.label}")

    def extract(self, items: list, desc: str) -> torch.Tensor:
        if desc not in self._features:
            with self.clock.phase(desc):
                self._features[desc] = extract_features(self.model, items, self.runtime, self.args.height,
                                                        self.args.width, self.args.batch_size, self.args.workers,
                                                        desc=desc, on_device=True, amp=self.args.amp)
        return self._features[desc]


def time_grouping(iteration: _Iteration) -> dict:
    """The grouping as selftraining.py runs it, twice: at the first iteration (eps computed) and at a later
    one (eps frozen, what every later iteration pays)."""
    iteration.label = FIRST_ITERATION
    first, _ = self_similarity_grouping(iteration)
    iteration.label = ""
    later, _ = self_similarity_grouping(iteration)
    names = models.feature_type_names(NUM_SPLIT)
    return {"eps": dict(zip(names, first.eps)),
            "clusters": {name: count_clusters(later.labels[:, t]) for t, name in enumerate(names)},
            "images_kept": int(len(later.kept))}


def time_training(model: torch.nn.Module, optimizer: torch.optim.Optimizer, runtime: Runtime,
                  target: datasets.ReIDDataset, args: argparse.Namespace, clock: Clock) -> dict:
    """E epochs of the SSG trainer on the target's true identities, then the loader alone (a fresh one) and
    the model alone (the same trainer on batches already on the device), and the GPU's busy share."""
    labels = np.repeat([[pid] for _, pid, _ in target.trainval], NUM_SPLIT + 1, axis=1)

    def loader():
        return identity_loader(target.trainval, train_transform(args.height, args.width, crop="none"),
                               runtime, args.batch_size, NUM_INSTANCES, args.workers, args.seed, labels)

    trainer = SSGTrainer(model, runtime, margin=0.5, num_instances=NUM_INSTANCES, amp=args.amp, print_freq=10**9)
    batches = loader()
    for epoch in range(args.epochs):
        with clock.phase(f"epoch {epoch}"):
            trainer.train(epoch, batches, optimizer)
    with clock.phase(NEXT_ITERATION_EPOCH):
        trainer.train(0, loader(), optimizer)  # its workers stop when it is dropped
    images_per_epoch = len(batches) * args.batch_size
    fresh = loader()
    for _ in fresh:  # starts the workers: not part of the rate
        pass
    with clock.phase("loader alone"):
        for _ in range(2):
            for _ in fresh:
                pass
    del fresh  # its workers stop
    images, pids = random_batch(args.batch_size, args.height, args.width, runtime.device)
    on_device = [[to_device(images, runtime), None, pids]] * len(batches)
    with clock.phase("model alone"):
        trainer.train(args.epochs, on_device, optimizer)
    busy, how = None, "not measured on the CPU"
    if runtime.device.type == "cuda":
        busy, how = profiled_gpu_busy(lambda: trainer.train(args.epochs + 1, batches, optimizer), runtime.device)
    later = [clock.seconds[f"epoch {epoch}"] for epoch in range(1, args.epochs)]
    return {"batches_per_epoch": len(batches), "images_per_epoch": images_per_epoch,
            "first_epoch_s": clock.seconds["epoch 0"], "later_epoch_s": float(np.mean(later)),
            "next_iteration_first_epoch_s": clock.seconds[NEXT_ITERATION_EPOCH],
            "loader_img_s": 2 * images_per_epoch / clock.seconds["loader alone"],
            "model_img_s": images_per_epoch / clock.seconds["model alone"],
            "gpu_busy_profiled": busy, "gpu_busy_how": how}


def measure(args: argparse.Namespace, runtime: Runtime, root: str) -> dict:
    """One iteration's phases on the data under ``root``; returns every figure."""
    target, source = load_data(root)
    clock = Clock(runtime.device)
    torch.manual_seed(args.seed)
    model = models.create(args.arch, num_split=NUM_SPLIT, num_features=2048, pretrained=False)
    model = wrap_model(model, runtime, bn_group_size=args.bn_group_size, batch_size=args.batch_size)
    size = (args.height, args.width)
    grouping = time_grouping(_Iteration(model, runtime, source, target, args, clock))
    optimizer = torch.optim.SGD(model.parameters(), lr=6e-5, momentum=0.9, weight_decay=5e-4)
    training = time_training(model, optimizer, runtime, target, args, clock)
    with clock.phase("evaluation"):
        evaluator = Evaluator(model, runtime, *size, args.batch_size, args.workers, amp=args.amp)
        metrics = evaluator.evaluate(target.query, target.gallery)
    with tempfile.TemporaryDirectory() as folder, clock.phase("checkpoint"):
        state = {"state_dict": model.state_dict(), "optimizer": optimizer.state_dict()}
        save_checkpoint(state, os.path.join(folder, "checkpoint.pth.tar"), is_best=True)
    return {"sizes": {"source": len(source), "target": len(target.trainval), "query": len(target.query),
                      "gallery": len(target.gallery)},
            "seconds": clock.seconds, "peak_gib": clock.peak_gib, "grouping": grouping, "training": training,
            "random_weights_metrics": metrics}


def projections(figures: dict) -> dict:
    """One iteration with 70 epochs and a 30-iteration run (plus the before-adaptation evaluation, and the eps
    and the warm-up of the first iteration)."""
    seconds, training = figures["seconds"], figures["training"]
    grouping = seconds["grouping"]
    eps = max(0.0, seconds[f"grouping{FIRST_ITERATION}"] - grouping)
    first_epoch = training["next_iteration_first_epoch_s"]
    warm_up = max(0.0, training["first_epoch_s"] - first_epoch)
    epochs = first_epoch + (EPOCHS_PER_ITERATION - 1) * training["later_epoch_s"]
    features = seconds["source features"] + seconds["target features"]
    iteration = features + grouping + epochs + seconds["evaluation"] + seconds["checkpoint"]
    return {"features_s": features, "grouping_s": grouping, "epochs_70_s": epochs, "iteration_s": iteration,
            "eps_s": eps, "warm_up_s": warm_up,
            "run_30_min": (seconds["evaluation"] + eps + warm_up + ITERATIONS * iteration) / 60}


def describe(args: argparse.Namespace, runtime: Runtime) -> str:
    device = runtime.device
    if device.type == "cuda":
        precision = (f"AMP ({amp_dtype(device)} autocast)" if args.amp else
                     f"default precision (fp32; cuDNN TF32 {torch.backends.cudnn.allow_tf32})")
        name = f"{torch.cuda.get_device_name(device)}, {precision}, channels_last"
    else:
        name = f"CPU, {torch.get_num_threads()} threads, fp32" + (" (--amp has no effect on the CPU)" if args.amp
                                                                  else "")
    groups = f"BatchNorm over groups of {args.bn_group_size}" if args.bn_group_size else "BatchNorm over the batch"
    return (f"{name}; torch {torch.__version__}; {available_cores()} CPU cores, {args.workers} loader workers; "
            f"{args.arch} at {args.height}x{args.width}, batch {args.batch_size}, {groups}")


def report(args: argparse.Namespace, runtime: Runtime, counts: Counts, generation: dict, figures: dict) -> dict:
    """Print the phase table, the rates, the projections and the targets; return what was printed."""
    seconds, peaks, training = figures["seconds"], figures["peak_gib"], figures["training"]
    projected = projections(figures)
    sizes = figures["sizes"]
    print(f"\nSSG pipeline, one iteration at Market-1501 scale x {args.scale:g}: N {sizes['target']:,} target, "
          f"M {sizes['source']:,} source, {sizes['query']:,} query, {sizes['gallery']:,} gallery images")
    print(describe(args, runtime))
    if generation["reused"]:
        print("data: reused from the previous run")
    else:
        print(f"data: {generation['images']:,} JPEGs generated in {generation['seconds']:.1f} s "
              f"({generation['images'] / generation['seconds']:,.0f} img/s, {generation['processes']} processes)")
    print(f"\n{'phase':<34}{'seconds':>9}{'peak GiB':>10}  detail")

    def row(name: str, detail: str = "") -> None:
        peak = f"{peaks[name]:.2f}" if name in peaks else "-"
        print(f"{name:<34}{seconds[name]:>9.2f}{peak:>10}  {detail}")

    for name, count in (("source features", sizes["source"]), ("target features", sizes["target"])):
        row(name, f"{count / seconds[name]:,.0f} img/s (flip sum: two forward passes each)")
    grouping = figures["grouping"]
    row(f"grouping{FIRST_ITERATION}", "distance, eps and DBSCAN per feature type; eps "
        + ", ".join(f"{name} {eps:.4f}" for name, eps in grouping["eps"].items()))
    row("grouping", "eps frozen, as every later iteration: clusters "
        + ", ".join(f"{name} {count}" for name, count in grouping["clusters"].items())
        + f" (random weights), {grouping['images_kept']} images kept")
    for epoch in range(args.epochs):
        row(f"epoch {epoch}", f"{training['batches_per_epoch']} batches on the true identities"
            + ("; starts the loader, first steps of the model" if epoch == 0 else ""))
    row(NEXT_ITERATION_EPOCH, "a new loader starts its workers, the model is warm: each later iteration's")
    row("loader alone", f"{training['loader_img_s']:,.0f} img/s: 2 epochs of a fresh loader after its first, "
        "no model")
    row("model alone", f"{training['model_img_s']:,.0f} img/s: the trainer on batches already on the device")
    row("evaluation", "query + gallery features, distances on the device, mAP and CMC")
    row("checkpoint", "checkpoint.pth.tar + model_best.pth.tar")
    epoch_images = training["images_per_epoch"]
    estimate = epoch_images / training["model_img_s"] / training["later_epoch_s"]
    busy = training["gpu_busy_profiled"]
    print(f"\nloader {training['loader_img_s']:,.0f} img/s vs model {training['model_img_s']:,.0f} img/s; a later "
          f"epoch runs at {epoch_images / training['later_epoch_s']:,.0f} img/s = {100 * estimate:.0f}% of the "
          "model's rate")
    print("GPU busy in a training epoch: " + (f"{100 * busy:.0f}% ({training['gpu_busy_how']})" if busy is not None
                                               else training["gpu_busy_how"]))
    print(f"\none iteration, projected: features {projected['features_s']:.1f} s + grouping "
          f"{projected['grouping_s']:.2f} s + {EPOCHS_PER_ITERATION} epochs {projected['epochs_70_s']:.1f} s "
          f"(a new loader's first + {EPOCHS_PER_ITERATION - 1} x later) + evaluation {seconds['evaluation']:.1f} s "
          f"+ checkpoint {seconds['checkpoint']:.1f} s = {projected['iteration_s']:.1f} s")
    print(f"a {ITERATIONS}-iteration run, projected: {projected['run_30_min']:.1f} min (with the before-adaptation "
          f"evaluation, and the first iteration's eps, {projected['eps_s']:.1f} s, and warm-up of the model, "
          f"{projected['warm_up_s']:.1f} s)")
    if peaks:
        print(f"peak GPU memory: {max(peaks.values()):.2f} GiB")
    check_targets(args, runtime, projected, busy if busy is not None else estimate)
    return {"device": describe(args, runtime), "scale": args.scale, "counts": asdict(counts),
            "generation": generation, **figures, "projected": projected}


def check_targets(args: argparse.Namespace, runtime: Runtime, projected: dict, busy: float) -> None:
    if runtime.device.type != "cuda" or args.scale != 1:
        print("targets: they apply to --scale 1 on an H100/H200")
        return
    checks = [(f"iteration <= {TARGET_ITERATION_S[args.amp]:.0f} s", projected["iteration_s"]
               <= TARGET_ITERATION_S[args.amp]),
              (f"30 iterations <= {TARGET_RUN_MIN:.0f} min", projected["run_30_min"] <= TARGET_RUN_MIN),
              (f"GPU busy >= {100 * TARGET_BUSY:.0f}% of an epoch", busy >= TARGET_BUSY),
              (f"grouping <= {TARGET_GROUPING_S:.0f} s", projected["grouping_s"] <= TARGET_GROUPING_S)]
    print("targets: " + "; ".join(f"{name}: {'met' if met else 'MISSED'}" for name, met in checks))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every image and identity count")
    parser.add_argument("--data-dir", default=os.path.join(REPO_DIR, "data", "pipeline"),
                        help="where the generated data are kept and reused")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs measured (>= 2)")
    parser.add_argument("-a", "--arch", default="resnet50", choices=models.names())
    parser.add_argument("-b", "--batch-size", type=int, default=128)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--amp", action="store_true", help="mixed precision on CUDA, as the scripts' --amp")
    parser.add_argument("--bn-group-size", type=int, default=64,
                        help="BatchNorm over groups of this many images, as the adaptation scripts (0: one group)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    add_workers_arg(parser)
    parser.add_argument("--gen-processes", type=int, default=available_cores(),
                        help="processes that render the data (default: every core available)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace, counts: Counts) -> None:
    if args.epochs < 2:
        raise UserError(f"--epochs {args.epochs}: expected >= 2 (the first epoch starts the loader, the later "
                        "ones give the rate projected to 70)")
    if args.batch_size < NUM_INSTANCES or args.batch_size % NUM_INSTANCES:
        raise UserError(f"--batch-size {args.batch_size}: expected a positive multiple of {NUM_INSTANCES}")
    if args.batch_size // NUM_INSTANCES > counts.target_ids:
        raise UserError(f"--batch-size {args.batch_size} needs {args.batch_size // NUM_INSTANCES} identities, "
                        f"--scale {args.scale:g} has {counts.target_ids}; use a smaller -b or a larger --scale")
    if args.workers < 0 or args.gen_processes < 1:
        raise UserError(f"--workers {args.workers} must be >= 0 and --gen-processes {args.gen_processes} >= 1")
    models.check_num_split(args.height, NUM_SPLIT)
    models.check_bn_group_size(args.bn_group_size, args.batch_size)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    counts = Counts().scaled(args.scale)
    check_args(args, counts)
    device = pick_device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    torch.backends.cudnn.benchmark = True
    runtime = Runtime(device)
    root, generation = prepare_data(args.data_dir, counts, args.scale, args.gen_processes)
    figures = measure(args, runtime, root)
    record = report(args, runtime, counts, generation, figures)
    if args.json:
        write_json(args.json, record)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
