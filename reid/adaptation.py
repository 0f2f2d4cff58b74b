"""The life of an adaptation run, shared by ``selftraining.py`` (SSG) and ``semitraining.py`` (SSG++).

:class:`AdaptationRun` sets the run up (the quick checks, logs, both datasets, the model from the source
checkpoint, SGD built once, the before-adaptation evaluation), continues a stopped or restarted run, and keeps
its records: one metrics.json entry per iteration with its cost, plots and checkpoints. The steps of an
iteration (features, distance, eps, DBSCAN, training, evaluation) are the scripts' own.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from reid import models
from reid.cluster import resolve_rho
from reid.evaluators import Evaluator
from reid.experiment import (
    WEIGHT_KEYS,
    Run,
    check_batch,
    check_images,
    open_dataset,
    resolve_checkpoint,
    resolve_model_options,
    resumed_checkpoint,
    wrap_model,
)
from reid.feature_extraction import extract_features
from reid.grouping import Grouping, check_enough_clusters, grouping_warnings
from reid.utils.data.loaders import identity_loader
from reid.utils.data.preprocessor import Item
from reid.utils.data.transforms import Crop, train_transform
from reid.utils.errors import UserError
from reid.utils.plots import plot_metrics
from reid.utils.records import CHECKPOINT
from reid.utils.runtime import launched_world_size, unwrap
from reid.utils.serialization import load_checkpoint, load_model_weights
from reid.utils.sheets import write_cluster_sheet


def check_args(args: argparse.Namespace) -> dict:
    """Checks that take seconds, before any expensive work. Returns the checkpoint to start from: the stopped
    run's (``--resume-from``, whose model options must all agree) or the source model (``--resume``). Model
    options not given come from that checkpoint."""
    check_batch(args.batch_size, args.num_instances, launched_world_size())
    checkpoint = resumed_checkpoint(args)
    if checkpoint is None:
        if not args.resume:
            raise UserError("--resume: give the source model trained by source_train.py (file or logs dir)")
        checkpoint = load_checkpoint(resolve_checkpoint(args.resume))
        resolve_model_options(args, checkpoint, args.resume, keys=WEIGHT_KEYS)
    models.check_num_split(args.height, args.num_split)
    return checkpoint


class AdaptationRun(Run):
    """An adaptation run: construction does the set-up and the before-adaptation row of metrics.json.

    The model comes from the source checkpoint (``--resume``), from a stopped run (``--resume-from``) or, in a
    worker group that torchrun restarted, from this run's newest checkpoint in the logs dir. Checkpoints hold
    ``state_dict``, ``optimizer``, ``epoch`` (= finished iterations), ``best_top1`` and ``eps`` (frozen per
    feature type), besides what :meth:`reid.experiment.Run.save` adds.

    :attr:`cost` measures the record being made: :meth:`extract` counts as the phase ``features``,
    :meth:`evaluate` as ``evaluation`` and :meth:`finish_iteration`'s checkpoint as ``checkpoint``; the scripts
    time ``grouping``, ``training`` (and SSG++'s ``propagation``). An iteration interrupted and resumed keeps
    the seconds of both attempts.
    """

    def __init__(self, args: argparse.Namespace):
        checkpoint = check_args(args)
        super().__init__(args)
        self.source = open_dataset(args.src_dataset, args)
        self.target = open_dataset(args.tgt_dataset, args, test_dir=args.test_dir)
        self.evaluable = bool(self.target.query and self.target.gallery)
        if args.evaluate and not self.evaluable:
            raise UserError(f"--evaluate: {args.tgt_dataset} has nothing labelled to evaluate on; name a labelled "
                            "test set with --test-dir")
        self.rho, why = resolve_rho(args.rho, args.images_per_identity, len(self.target.trainval))
        if self.runtime.is_main:
            print(why)
        if args.check_images:
            check_images(self.used_images(), self.runtime, args.workers)
        continued = self.continue_from(checkpoint if args.resume_from else None, unit="iteration")
        checkpoint = continued or checkpoint
        self.start_iteration = continued["epoch"] if continued else 0
        self.best_top1: float | None = continued.get("best_top1", 0.0) if continued else None
        self.eps: list[float] | None = continued.get("eps") if continued else None

        model = models.create(args.arch, num_split=args.num_split, num_features=args.features, pretrained=False)
        source = os.path.join(args.logs_dir, CHECKPOINT) if continued and not args.resume_from else \
            args.resume_from or args.resume
        load_model_weights(model, checkpoint["state_dict"], source, drop_classifier=True)
        if not continued or args.resume_from:
            print(f"{'resumed' if continued else 'source model'} {source}")
        self.model = wrap_model(model, self.runtime, args.sync_bn, args.bn_group_size, args.batch_size)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=args.lr, momentum=args.momentum,
                                         weight_decay=args.weight_decay)
        if continued:
            self.restore(continued, self.optimizer)
        self.evaluator = Evaluator(self.model, self.runtime, args.height, args.width, workers=args.workers,
                                   amp=args.amp, rerank=args.rerank)
        self.record("before")
        if not self.evaluable:
            print(f"nothing labelled to evaluate on: {args.tgt_dataset} has no query/gallery (--test-dir names one); "
                  "each iteration records the grouping's figures")
        elif "before" not in self.metrics:
            print("before adaptation:")
            before = self._evaluate(last=args.evaluate)
            self.finish("before", before)
        if self.best_top1 is None and self.evaluable:
            # As the released code: model_best is an iteration that beats the source model's target top-1.
            self.best_top1 = self.metrics["before"]["top1"]

    def used_images(self) -> dict[str, list[Item]]:
        """The images the run reads, by ``dataset subset``: the source's training images (for the distance's
        source term, when ``--lambda-value`` > 0) and every target image."""
        args, subsets = self.args, {}
        if args.lambda_value > 0:
            subsets[f"{args.src_dataset} trainval"] = self.source.trainval
        subsets.update({f"{args.tgt_dataset} {name}": getattr(self.target, name)
                        for name in ("trainval", "query", "gallery")})
        return subsets

    def iterations(self) -> Iterator[int]:
        """The iterations left to run; each starts its own record (:attr:`cost`)."""
        for iteration in range(self.start_iteration, self.args.iteration):
            self.record(f"iteration_{iteration}")
            yield iteration

    def extract(self, items: Sequence[Item], desc: str) -> torch.Tensor:
        """Pooled features ``f(x) + f(flip(x))`` of ``items`` (N, S+1, C) on the model's device, where the
        distances are computed; timed as the phase ``features``."""
        with self.cost.phase("features"):
            return extract_features(self.model, items, self.runtime, self.args.height, self.args.width,
                                    workers=self.args.workers, desc=desc, on_device=True, amp=self.args.amp)

    def describe(self, iteration: int, grouping: Grouping) -> dict:
        """The grouping's figures for the iteration's record (with its warnings when it degenerates, and, on a
        labelled target, the global clusters measured against the true identities), printed, and a contact sheet
        of its clusters in ``clusters/iteration_<k>.png``; UserError when it left too few clusters for a batch."""
        args, target = self.args, self.target
        names = models.feature_type_names(args.num_split)
        true_ids = np.array([pid for _, pid, _ in target.trainval]) if target.has_labels else None
        summary = grouping.summary(names, true_ids)
        clusters = ", ".join(f"{name} {summary[f'clusters_{name}']}" for name in names)
        line = (f"iteration {iteration}: clusters {clusters}; {summary['images_kept']} of {summary['images_total']} "
                f"images kept ({summary['kept_percent']:.1f}%)")
        if true_ids is not None:
            line += (f"; global clusters against the true identities: pair precision "
                     f"{summary['pair_precision']:.1f}%, recall {summary['pair_recall']:.1f}%")
        print(line)
        warnings = grouping_warnings(summary, names, self.images_per_identity(), args.images_per_identity is not None)
        for warning in warnings:
            print(warning)
        if warnings:
            summary["grouping_warnings"] = warnings
        if self.runtime.is_main:
            write_cluster_sheet(os.path.join(args.logs_dir, "clusters", f"iteration_{iteration}.png"),
                                [fname for fname, _, _ in target.trainval], grouping.labels[:, 0],
                                f"{args.tgt_dataset}, iteration {iteration}: global clusters", true_ids=true_ids,
                                seed=args.seed)
        check_enough_clusters(grouping, args.batch_size, args.num_instances, iteration)
        return summary

    def images_per_identity(self) -> float | None:
        """How many images of each person the target holds: ``--images-per-identity``, else a labelled target's
        own figure, else unknown (None)."""
        if self.args.images_per_identity is not None:
            return self.args.images_per_identity
        target = self.target
        return len(target.trainval) / target.num_trainval_ids if target.has_labels else None

    def loader(self, indices: np.ndarray, labels: np.ndarray, iteration: int, crop: Crop = "none",
               num_instances: int | None = None):
        """Identity-balanced batches of the target images ``indices`` with ``labels`` (one row per image),
        ``num_instances`` images per identity (default ``--num-instances``)."""
        args = self.args
        return identity_loader([self.target.trainval[i] for i in indices],
                               train_transform(args.height, args.width, crop=crop), self.runtime, args.batch_size,
                               num_instances or args.num_instances, args.workers, args.seed + iteration, labels)

    def evaluate(self, iteration: int) -> dict:
        """Target mAP and CMC after ``iteration`` (nothing on a target without a labelled test set); the last one
        also saves features and draws ranked lists when asked."""
        if not self.evaluable:
            return {}
        print(f"iteration {iteration} on the target:")
        return self._evaluate(last=iteration + 1 == self.args.iteration)

    def _evaluate(self, last: bool) -> dict:
        extras = {}
        if last:
            extras = {"save_features": self.args.save_features, "visrank": self.args.visrank,
                      "visrank_dir": os.path.join(self.args.logs_dir, "visrank")}
        with self.cost.phase("evaluation"):
            return self.evaluator.evaluate(self.target.query, self.target.gallery, **extras)

    def finish_iteration(self, iteration: int, record: dict) -> None:
        """Write the iteration's metrics, plots and checkpoint; model_best follows the target top-1 (a target
        without a labelled test set selects none: its newest checkpoint is the model).

        The record is written before the checkpoint, so that a run stopped in between redoes the iteration
        rather than losing its record, and again after it, with the checkpoint's seconds."""
        is_best = self.evaluable and record["top1"] > self.best_top1
        if is_best:
            self.best_top1 = record["top1"]
        key = f"iteration_{iteration}"
        self.metrics[key] = {**record, "cost": self.cost.summary()}
        if self.runtime.is_main:
            plot_metrics(self.metrics.data, os.path.join(self.args.logs_dir, "plots"))
            self.scalars.add(iteration, record, prefix="target/")
        self.save({"state_dict": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                   "epoch": iteration + 1, "best_top1": self.best_top1, "eps": self.eps}, is_best)
        self.finish(key, record)
        if self.runtime.is_main and self.evaluable:
            print(f"iteration {iteration}: top-1 {record['top1']:.1f}%  best {self.best_top1:.1f}%"
                  + ("  (new best)" if is_best else ""))
        self.runtime.barrier()
