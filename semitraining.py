"""Step 3: clustering-guided semi-supervised training (SSG++): SSG plus one labelled image per cluster.

Iterations before ``--label-iteration`` are plain SSG. Then one target image per global cluster is labelled
(``--sample cluster``; ``random`` draws as many images uniformly), saved under the logs dir, and every
iteration propagates those labels to the most confident unlabelled images (1/``--iteration`` of them more
each iteration, all of them at the last); a labelled batch (4 images per identity whatever --num-instances
is, each a random crop of the raw image) joins each cluster batch in the loss (docs/algorithm.md, "SSG++").

    python semitraining.py --src_dataset dukemtmc --tgt_dataset market1501 --resume logs/dukemtmc \\
        --iteration 30 --data_dir data --logs_dir logs/duke2market_semi --gpu-devices 0,1 --num-split 2 \\
        --sample cluster
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import numpy as np
import torch

from reid.adaptation import AdaptationRun
from reid.arguments import adaptation_parser, add
from reid.cluster import Grouping
from reid.experiment import check_batch
from reid.paper import ADAPTATION
from reid.propagation import SAMPLE_METHODS, SemiSupervision
from reid.trainers import LABELLED_INSTANCES, JointBatches, SemiTrainer, SSGTrainer
from reid.utils.distributed import print_digest
from reid.utils.runtime import launched_world_size, run_main
from selftraining import self_similarity_grouping

GroupingStep = Callable[[AdaptationRun], "tuple[Grouping, torch.Tensor]"]


def learning_rate(base_lr: float, epoch: int, epochs: int) -> float:
    """``base_lr`` for the first 55/70 of an iteration's epochs, a tenth of it after."""
    return base_lr if epoch < round(epochs * 55 / 70) else base_lr * 0.1


def semi_supervision(run: AdaptationRun) -> SemiSupervision:
    """The labelled set and propagation of this run, stored as ``labelled_set.json`` in its logs dir."""
    args = run.args
    return SemiSupervision(os.path.join(args.logs_dir, "labelled_set.json"), run.target.trainval, args.sample,
                           args.label_iteration, args.iteration, args.label_seed, share=run.runtime.share)


def train(run: AdaptationRun, supervision: SemiSupervision,
          group: GroupingStep = self_similarity_grouping) -> None:
    """Every iteration: self-similarity grouping (``group``), then ``--epochs`` of the SSG loss on the clusters,
    joined by the loss of a labelled batch once ``supervision`` selects labelled images."""
    args = run.args
    options = dict(margin=args.margin, num_instances=args.num_instances, amp=args.amp, print_freq=args.print_freq)
    ssg_trainer, semi_trainer = SSGTrainer(run.model, run.runtime, **options), SemiTrainer(
        run.model, run.runtime, **options)
    for iteration in run.iterations():
        grouping, target_features = group(run)
        record, trainer = run.describe(iteration, grouping), ssg_trainer
        with run.cost.phase("propagation"):
            selection = supervision.select(iteration, grouping.labels[:, 0], target_features)
        with run.cost.phase("training"):
            batches = run.loader(grouping.kept, grouping.labels[grouping.kept], iteration)
            if selection is not None:
                print_digest(run.runtime, "labelled set", np.stack([selection.indices, selection.labels]))
                labelled = run.loader(selection.indices, selection.labels, iteration, crop="raw",
                                      num_instances=LABELLED_INSTANCES)
                batches, trainer = JointBatches(batches, labelled), semi_trainer
                record.update(selection.summary())
            for epoch in range(args.epochs):
                for param_group in run.optimizer.param_groups:
                    param_group["lr"] = learning_rate(args.lr, epoch, args.epochs)
                record["loss"] = trainer.train(epoch, batches, run.optimizer)["loss"]
        record.update(run.evaluate(iteration))
        run.finish_iteration(iteration, record)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_batch(args.batch_size, LABELLED_INSTANCES, launched_world_size(),
                what="the labelled loader's images per identity,")
    run = AdaptationRun(args)  # checks, logs, datasets, source model, before-adaptation evaluation
    if args.evaluate:
        return
    train(run, semi_supervision(run))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = adaptation_parser(__doc__, logs_name="semitraining")
    add(parser, "--sample", type=str, default="cluster", choices=SAMPLE_METHODS, help="how to draw labels")
    add(parser, "--label-iteration", type=int, default=ADAPTATION.label_iteration,
        help="iteration at which the labelled set is drawn")
    add(parser, "--label-seed", type=int, default=None,
        help="seed of the labelled set's draw (default: --seed - 1, the release's 0 at its default seed 1)")
    args = parser.parse_args(argv)
    if args.label_seed is None:
        args.label_seed = args.seed - 1
    return args


if __name__ == "__main__":
    raise SystemExit(run_main(main))
