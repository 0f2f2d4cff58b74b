"""Step 2: Self-similarity Grouping (SSG, Fu et al., ICCV 2019), unsupervised adaptation to an unlabelled target.

Each iteration (docs/algorithm.md): extract source and target features -> source-aware k-reciprocal distance
per feature type (global, upper, lower) -> DBSCAN with eps frozen at the first iteration -> the images no type
calls an outlier, labelled by their clusters -> triplet training -> evaluation on the target.

    python selftraining.py --src_dataset market1501 --tgt_dataset dukemtmc --resume logs/market1501 \\
        --iteration 30 --data_dir data --logs_dir logs/market2duke --gpu-devices 0,1 --num-split 2
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from reid.adaptation import AdaptationRun
from reid.arguments import adaptation_parser
from reid.cluster import cluster_labels, compute_eps
from reid.feature_extraction import type_features
from reid.grouping import Grouping
from reid.rerank import re_ranking
from reid.trainers import SSGTrainer
from reid.utils.distributed import print_digest
from reid.utils.runtime import run_main


def self_similarity_grouping(run: AdaptationRun) -> tuple[Grouping, torch.Tensor]:
    """Group the target's training images three ways (docs/algorithm.md, steps 1-5). Under DDP every rank computes
    a share of the distances, rank 0 eps and DBSCAN, and every rank trains on its labels. Returns the grouping
    and the target's pooled features, which SSG++ reuses."""
    args = run.args
    source = run.extract(run.source.trainval, "source features") if args.lambda_value > 0 else None
    target = run.extract(run.target.trainval, "target features")
    with run.cost.phase("grouping"):
        target_types = type_features(target)
        source_types = type_features(source) if source is not None else [None] * len(target_types)
        # every rank computes a share of each distance; rank 0 receives it (the others None)
        distances = [re_ranking(source_t, target_t, k1=args.k1, k2=args.k2, lambda_value=args.lambda_value,
                                sparse=True, distributed=run.runtime.distributed)
                     for source_t, target_t in zip(source_types, target_types)]
        if run.eps is None:  # frozen at the first iteration
            run.eps = run.runtime.share(lambda: [compute_eps(distance, run.rho) for distance in distances])
        labels = run.runtime.share(lambda: np.stack(
            [cluster_labels(distance, eps, args.min_samples) for distance, eps in zip(distances, run.eps)], axis=1))
    print_digest(run.runtime, "pseudo-labels", labels)
    return Grouping(labels, run.eps), target


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run = AdaptationRun(args)  # checks, logs, datasets, source model, before-adaptation evaluation
    if args.evaluate:
        return
    trainer = SSGTrainer(run.model, run.runtime, margin=args.margin, num_instances=args.num_instances,
                         amp=args.amp, print_freq=args.print_freq)
    for iteration in run.iterations():
        grouping, _ = self_similarity_grouping(run)
        summary = run.describe(iteration, grouping)
        with run.cost.phase("training"):
            loader = run.loader(grouping.kept, grouping.labels[grouping.kept], iteration)
            losses = [trainer.train(epoch, loader, run.optimizer) for epoch in range(args.epochs)]
        record = {**run.evaluate(iteration), **summary, "loss": losses[-1]["loss"] if losses else None}
        run.finish_iteration(iteration, record)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return adaptation_parser(__doc__, logs_name="selftraining").parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
