"""The machinery shared by ``selftraining.py`` (SSG) and ``semitraining.py`` (SSG++).

One iteration of self-similarity grouping (spec section 4): extract source and target features, compute the
source-aware k-reciprocal distance once per feature type, freeze DBSCAN's eps at the first iteration, cluster,
and keep the images that no feature type calls an outlier. :class:`AdaptationRun` owns the run: set-up, the
before-adaptation row, one metrics entry per iteration with its cost, plots, checkpoints and resuming.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
from torch import nn
from tqdm import tqdm

from reid import models
from reid.arguments import (
    ArgumentParser,
    add,
    add_data_args,
    add_grouping_args,
    add_model_args,
    add_optim_args,
    add_run_args,
)
from reid.cluster import cluster_labels, compute_eps, count_clusters, pair_scores, pseudo_labels
from reid.evaluators import Evaluator, extract_features, type_features
from reid.experiment import (
    CHECKPOINT,
    NEWEST_FIRST,
    WEIGHT_KEYS,
    Scalars,
    check_batch,
    model_config,
    open_dataset,
    open_metrics,
    read_run_metrics,
    resolve_checkpoint,
    resolve_model_options,
    start_run,
    wrap_model,
)
from reid.rerank import re_ranking
from reid.utils.cost import CostMeter, finish_record, record_meter
from reid.utils.data.loaders import identity_loader
from reid.utils.data.preprocessor import Item
from reid.utils.data.transforms import Crop, train_transform
from reid.utils.errors import UserError
from reid.utils.plots import plot_metrics
from reid.utils.runtime import Runtime, unwrap
from reid.utils.serialization import load_checkpoint, load_model_weights, save_checkpoint

FEATURE_TYPES = ("global", "upper", "lower")


def type_names(num_split: int) -> list[str]:
    """Names of the S+1 feature types: global, then the stripes top to bottom."""
    if num_split == 2:
        return list(FEATURE_TYPES)
    return ["global", *(f"stripe{s}" for s in range(num_split))]


def build_parser(description: str, logs_name: str) -> argparse.ArgumentParser:
    """The options of both adaptation scripts, with the spec's defaults."""
    parser = ArgumentParser(description=description)
    add_data_args(parser, cross_domain=True, batch_size=128, num_instances=4)
    add_model_args(parser, bn_group_size=64)
    add_optim_args(parser, lr=6e-5, epochs=70)
    add_grouping_args(parser)
    add_run_args(parser, logs_name=logs_name)
    add(parser, "--resume-from", type=str, default="",
        help="continue an interrupted run from its checkpoint.pth.tar (or its logs dir)")
    return parser


def load_run_checkpoint(fpath: str) -> dict:
    """A checkpoint of an adaptation run (what ``--resume-from`` continues); another file raises UserError
    naming it."""
    checkpoint = load_checkpoint(fpath)
    if not {"optimizer", "epoch"} <= set(checkpoint):
        raise UserError(f"{fpath}: not a checkpoint of an adaptation run (it has no optimiser state or iteration "
                        "count); a source model is given with --resume")
    return checkpoint


def check_args(args: argparse.Namespace, world_size: int = 1) -> dict:
    """Checks that take seconds, before any expensive work. Returns the checkpoint to start from: the
    interrupted run's (``--resume-from``, whose model options must all agree) or the source model
    (``--resume``). Model options not given come from that checkpoint."""
    check_batch(args.batch_size, args.num_instances, world_size)
    if args.resume_from:
        checkpoint = load_run_checkpoint(resolve_checkpoint(args.resume_from, "--resume-from", NEWEST_FIRST))
        resolve_model_options(args, checkpoint, args.resume_from)
    elif args.resume:
        checkpoint = load_checkpoint(resolve_checkpoint(args.resume))
        resolve_model_options(args, checkpoint, args.resume, keys=WEIGHT_KEYS)
    else:
        raise UserError("--resume: give the source model trained by source_train.py (file or logs dir)")
    models.check_num_split(args.height, args.num_split)
    return checkpoint


@dataclass
class Grouping:
    """DBSCAN labels of every target training image (N, S+1), -1 = outlier, and the frozen eps per type; with
    the images' true identities, the summary also measures the global clusters against them (a diagnostic)."""

    labels: np.ndarray
    eps: list[float]
    true_ids: np.ndarray | None = None

    @functools.cached_property
    def kept(self) -> np.ndarray:
        """Indices of the images no feature type calls an outlier (spec step 5)."""
        return pseudo_labels(list(self.labels.T))[0]

    def summary(self, names: list[str]) -> dict:
        record = {f"eps_{n}": float(e) for n, e in zip(names, self.eps)}
        record.update({f"clusters_{n}": count_clusters(self.labels[:, t]) for t, n in enumerate(names)})
        record["images_kept"] = int(len(self.kept))
        if self.true_ids is not None:
            record["pair_precision"], record["pair_recall"] = pair_scores(self.labels[:, 0], self.true_ids)
        return record


def self_similarity_grouping(model: nn.Module, source: list[Item], target: list[Item], runtime: Runtime,
                             args: argparse.Namespace, eps: list[float] | None,
                             cost: CostMeter) -> tuple[Grouping, torch.Tensor]:
    """Spec steps 1-4, timed as the phases ``features`` and ``grouping`` (distance, eps and DBSCAN) of
    ``cost``. Returns the grouping and the target's pooled features (N, S+1, C), which SSG++ reuses. The
    features stay on the model's device, where the distances are computed (only their sparse result goes to
    the CPU, for DBSCAN). Under DDP every rank computes a share of each distance; rank 0 clusters and
    broadcasts, so every rank trains on the same pseudo-labels."""
    def features(items: list[Item], desc: str) -> torch.Tensor:
        return extract_features(model, items, runtime, args.height, args.width, workers=args.workers, desc=desc,
                                on_device=True, amp=args.amp)

    with cost.phase("features"):
        source_pooled = features(source, "source features") if args.lambda_value > 0 else None
        target_pooled = features(target, "target features")
    with cost.phase("grouping"):
        grouping = _cluster(source_pooled, target_pooled, args, eps, runtime)
    print_digest(runtime, "pseudo-labels", grouping.labels)
    return grouping, target_pooled


def print_digest(runtime: Runtime, what: str, labels: np.ndarray) -> None:
    """Under DDP every rank prints a digest of the labels it trains on: the log shows that the ranks agree."""
    if runtime.distributed:
        digest = hashlib.sha1(np.ascontiguousarray(labels).tobytes()).hexdigest()[:12]
        # One write with its newline: print() writes the end apart, and another rank's line could land between.
        print(f"rank {runtime.rank}: {what} digest {digest}\n", end="", flush=True)


def _cluster(source_pooled: torch.Tensor | None, target_pooled: torch.Tensor, args: argparse.Namespace,
             eps: list[float] | None, runtime: Runtime) -> Grouping:
    """Per feature type: the distance, every rank computing its share (rank 0 gets it), then eps and DBSCAN on
    rank 0, shared with the others, who wait for them however long they take."""
    target_types = type_features(target_pooled)
    source_types = type_features(source_pooled) if source_pooled is not None else [None] * len(target_types)
    labels, eps_used = [], []
    types = tqdm(list(zip(source_types, target_types)), desc="distance + DBSCAN", leave=False,
                 disable=None if runtime.is_main else True)
    for t, (source_t, target_t) in enumerate(types):
        distance = re_ranking(source_t, target_t, k1=args.k1, k2=args.k2, lambda_value=args.lambda_value,
                              sparse=True, distributed=runtime.distributed)
        eps_t, labels_t = runtime.share(functools.partial(_dbscan, distance, eps[t] if eps else None, args))
        eps_used.append(eps_t)
        labels.append(labels_t)
    return Grouping(np.stack(labels, axis=1), eps_used)


def _dbscan(distance: scipy.sparse.csr_matrix, eps: float | None, args: argparse.Namespace
            ) -> tuple[float, np.ndarray]:
    """eps (the frozen one, else computed from ``distance``) and DBSCAN's labels."""
    eps = compute_eps(distance, args.rho) if eps is None else eps
    return eps, cluster_labels(distance, eps, args.min_samples)


def check_enough_clusters(grouping: Grouping, args: argparse.Namespace, iteration: int) -> None:
    """A batch needs ``batch_size / num_instances`` distinct global clusters among the kept images. The advice
    follows the cause: few clusters holding most images were merged (eps too large), few images kept were left
    out as outliers (eps too small)."""
    needed = args.batch_size // args.num_instances
    found = len(np.unique(grouping.labels[grouping.kept, 0]))
    if found < needed:
        kept, total = len(grouping.kept), len(grouping.labels)
        rho = "a smaller --rho" if kept * 2 >= total else "a larger --rho"
        raise UserError(f"iteration {iteration}: grouping kept {found} usable clusters ({kept} of {total} "
                        f"images), a batch of {args.batch_size} needs {needed}; stopped, the "
                        f"last checkpoint is kept (try {rho}, a smaller --batch-size or a better source model)")


class AdaptationRun:
    """The state of an adaptation run and the steps both scripts share.

    Construction does the set-up: the quick checks, logs, both datasets, the model loaded from the source
    checkpoint (``--resume``), from an interrupted run (``--resume-from``) or, in a worker group that torchrun
    restarted, from this run's newest checkpoint in the logs dir; the evaluator, SGD built once, and the
    before-adaptation row of metrics.json. Checkpoints hold ``state_dict``, ``optimizer``, ``epoch`` (= finished
    iterations), ``best_top1``, ``eps`` (frozen per feature type), ``rng`` (rank 0's RNG states) and
    ``rng_ranks`` (every rank's), ``run_id`` (the torchrun run that wrote it) and ``config``.

    :attr:`cost` measures the record being made (:mod:`reid.utils.cost`): the phases ``features`` and
    ``grouping`` (:meth:`group`), ``evaluation`` and ``checkpoint`` are timed here, ``training`` (and SSG++'s
    ``propagation``) by the scripts. An iteration interrupted and resumed keeps the seconds of both attempts.
    """

    def __init__(self, args: argparse.Namespace):
        checkpoint = check_args(args, int(os.environ.get("WORLD_SIZE", "1")))
        self.args = args
        self.runtime = start_run(args)
        self.source = open_dataset(args.src_dataset, args)
        self.target = open_dataset(args.tgt_dataset, args)
        restart, records = self.runtime.share(self._starting_point)
        if restart is not None:
            resolve_model_options(args, restart, args.logs_dir)
            checkpoint = restart
        resuming = restart is not None or bool(args.resume_from)
        self.metrics = open_metrics(args, self.runtime, records)
        self.start_iteration = checkpoint["epoch"] if resuming else 0
        self.best_top1: float | None = checkpoint.get("best_top1", 0.0) if resuming else None
        self.eps: list[float] | None = checkpoint.get("eps") if resuming else None
        self.scalars = Scalars(args.logs_dir, args.tensorboard and self.runtime.is_main)

        model = models.create(args.arch, num_split=args.num_split, num_features=args.features, pretrained=False)
        source = os.path.join(args.logs_dir, CHECKPOINT) if restart is not None else args.resume_from or args.resume
        load_model_weights(model, checkpoint["state_dict"], source, drop_classifier=True)
        if restart is not None:
            print(f"worker group restarted (restart {self.runtime.restart}): continuing this run from {source} at "
                  f"iteration {self.start_iteration}")
        else:
            print(f"{'resumed' if resuming else 'source model'} {source}")
        self.model = wrap_model(model, self.runtime, args.sync_bn, args.bn_group_size, args.batch_size)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=args.lr, momentum=args.momentum,
                                         weight_decay=args.weight_decay)
        if resuming:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            _set_rng_state(_saved_rng_state(checkpoint, self.runtime))
        self.evaluator = Evaluator(self.model, self.runtime, args.height, args.width, workers=args.workers,
                                   amp=args.amp, rerank=args.rerank)
        self.cost = record_meter(self.metrics, "before", self.runtime.device)
        if "before" not in self.metrics:
            print("before adaptation:")
            with self.cost.phase("evaluation"):
                before = self.evaluator.evaluate(self.target.query, self.target.gallery)
            finish_record(self.metrics, "before", {**before, "cost": self.cost.summary()})
        if self.best_top1 is None:
            # As the released code: model_best is an iteration that beats the source model's target top-1.
            self.best_top1 = self.metrics["before"]["top1"]

    def _starting_point(self) -> tuple[dict | None, dict]:
        """Rank 0 decides where the run starts, for every rank (:meth:`Runtime.share`): in a restarted worker
        group, this run's newest checkpoint in the logs dir (None before its first iteration ended: the group
        starts over); and the metrics.json entries of the run being continued."""
        restart = None
        if self.runtime.restart:
            restart = run_checkpoint_in(self.args.logs_dir, self.runtime.run_id)
        continuing = restart is not None or bool(self.args.resume_from)
        return restart, read_run_metrics(self.args.logs_dir) if continuing else {}

    def iterations(self) -> Iterator[int]:
        """The iterations left to run; each starts its own :attr:`cost`."""
        for iteration in range(self.start_iteration, self.args.iteration):
            self.cost = record_meter(self.metrics, f"iteration_{iteration}", self.runtime.device)
            yield iteration

    def group(self, iteration: int) -> tuple[Grouping, torch.Tensor]:
        """Self-similarity grouping of the target (eps frozen after the first iteration); returns the grouping
        and the target's pooled features."""
        grouping, target_pooled = self_similarity_grouping(self.model, self.source.trainval, self.target.trainval,
                                                           self.runtime, self.args, self.eps, self.cost)
        self.eps = grouping.eps
        grouping.true_ids = np.array([pid for _, pid, _ in self.target.trainval])
        summary = grouping.summary(type_names(self.args.num_split))
        clusters = ", ".join(f"{key[len('clusters_'):]} {value}" for key, value in summary.items()
                             if key.startswith("clusters_"))
        print(f"iteration {iteration}: clusters {clusters}; {summary['images_kept']} of {len(grouping.labels)} "
              f"images kept; global clusters against the true identities: pair precision "
              f"{summary['pair_precision']:.1f}%, recall {summary['pair_recall']:.1f}%")
        check_enough_clusters(grouping, self.args, iteration)
        return grouping, target_pooled

    def loader(self, indices: np.ndarray, labels: np.ndarray, iteration: int, crop: Crop = "none",
               num_instances: int | None = None):
        """Identity-balanced batches of the target images ``indices`` with ``labels`` (one row per image),
        ``num_instances`` images per identity (default ``--num-instances``)."""
        args = self.args
        return identity_loader([self.target.trainval[i] for i in indices],
                               train_transform(args.height, args.width, crop=crop), self.runtime, args.batch_size,
                               num_instances or args.num_instances, args.workers, args.seed + iteration, labels)

    def evaluate(self, iteration: int) -> dict:
        """Target mAP and CMC; the last iteration also saves features and draws ranked lists when asked."""
        print(f"iteration {iteration} on the target:")
        extras = {}
        if iteration + 1 == self.args.iteration:
            extras = {"save_features": self.args.save_features, "visrank": self.args.visrank,
                      "visrank_dir": os.path.join(self.args.logs_dir, "visrank")}
        with self.cost.phase("evaluation"):
            return self.evaluator.evaluate(self.target.query, self.target.gallery, **extras)

    def finish_iteration(self, iteration: int, record: dict) -> None:
        """Write the iteration's metrics, plots and checkpoint; model_best follows the target top-1.

        The record is written before the checkpoint, so that a run stopped in between redoes the iteration
        rather than losing its record, and again after it, with the checkpoint's seconds."""
        is_best = record["top1"] > self.best_top1
        self.best_top1 = max(self.best_top1, record["top1"])
        rng_states = self.runtime.gather(_rng_state())  # each rank's augmentations drew its own numbers
        key = f"iteration_{iteration}"
        self.metrics[key] = {**record, "cost": self.cost.summary()}
        if self.runtime.is_main:
            plot_metrics(self.metrics.data, os.path.join(self.args.logs_dir, "plots"))
            self.scalars.add(iteration, record, prefix="target/")
        with self.cost.phase("checkpoint"):
            if self.runtime.is_main:
                state = {"state_dict": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                         "epoch": iteration + 1, "best_top1": self.best_top1, "eps": self.eps,
                         "rng": rng_states[0], "rng_ranks": rng_states, "run_id": self.runtime.run_id,
                         "config": model_config(self.args)}
                save_checkpoint(state, os.path.join(self.args.logs_dir, CHECKPOINT), is_best=is_best)
        finish_record(self.metrics, key, {**record, "cost": self.cost.summary()})
        if self.runtime.is_main:
            print(f"iteration {iteration}: top-1 {record['top1']:.1f}%  best {self.best_top1:.1f}%"
                  + ("  (new best)" if is_best else ""))
        self.runtime.barrier()


def run_checkpoint_in(logs_dir: str, run_id: str) -> dict | None:
    """The checkpoint in ``logs_dir`` when the torchrun run ``run_id`` wrote it (an older run's is not this
    run's state), else None. Written atomically, it is always the newest complete one."""
    fpath = os.path.join(logs_dir, CHECKPOINT)
    if not run_id or not os.path.isfile(fpath):
        return None
    checkpoint = load_run_checkpoint(fpath)
    return checkpoint if checkpoint.get("run_id") == run_id else None


def _saved_rng_state(checkpoint: dict, runtime: Runtime) -> dict | None:
    """This rank's RNG states in ``checkpoint``: its own when the checkpoint was saved by as many ranks, else
    rank 0's (older checkpoints, or another number of processes)."""
    per_rank = checkpoint.get("rng_ranks") or []
    return per_rank[runtime.rank] if len(per_rank) == runtime.world_size else checkpoint.get("rng")


def _rng_state() -> dict:
    """RNG states as plain lists and tensors, so that checkpoints load with ``weights_only=True``."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": [name, torch.from_numpy(key.astype(np.int64)), pos,
                                                   has_gauss, gauss], "torch": torch.get_rng_state()}


def _set_rng_state(state: dict | None) -> None:
    if state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        name, key, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state["torch"])
