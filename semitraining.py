"""Step 3: clustering-guided semi-supervised training (SSG++): SSG plus one labelled image per cluster.

Iterations before ``--label-iteration`` are plain SSG. Then one target image per global cluster is labelled
(``--sample cluster``; ``random`` draws as many images uniformly), saved under the logs dir, and every
iteration propagates those labels to the most confident unlabelled images (1/``--iteration`` of them more
each iteration, all of them at the last); a labelled batch (4 images per identity whatever --num-instances
is, each a random crop of the raw image) joins each cluster batch in the loss (docs/algorithm.md, "SSG++"). On
one's own crops (``--tgt_dataset folder:PATH``) a person labels the drawn images: the run writes them as numbered
sheets and a CSV to fill, stops (exit status 3), and goes on with ``--labels`` (docs/own-data.md).

    python semitraining.py --src_dataset dukemtmc --tgt_dataset market1501 --resume logs/dukemtmc \\
        --iteration 30 --data_dir data --logs_dir logs/duke2market_semi --gpu-devices 0,1 --num-split 2 \\
        --sample cluster
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable

import numpy as np
import torch

from reid.adaptation import AdaptationRun
from reid.annotation import TEMPLATE, CsvLabeller
from reid.arguments import adaptation_parser
from reid.experiment import check_batch
from reid.grouping import Grouping
from reid.paper import ADAPTATION
from reid.propagation import SAMPLE_METHODS, SemiSupervision
from reid.trainers import LABELLED_INSTANCES, JointBatches, SemiTrainer, SSGTrainer
from reid.utils.cli import add
from reid.utils.distributed import print_digest
from reid.utils.errors import UserError
from reid.utils.runtime import launched_world_size, run_main
from selftraining import self_similarity_grouping

GroupingStep = Callable[[AdaptationRun], "tuple[Grouping, torch.Tensor]"]


def learning_rate(base_lr: float, epoch: int, epochs: int) -> float:
    """``base_lr`` for the first 55/70 of an iteration's epochs, a tenth of it after."""
    return base_lr if epoch < round(epochs * 55 / 70) else base_lr * 0.1


def semi_supervision(run: AdaptationRun, argv: list[str] | None = None) -> SemiSupervision:
    """The labelled set and propagation of this run, stored as ``labelled_set.json`` in its logs dir. On a
    labelled target the drawn images take their true identities, as released; on one's own crops a person gives
    them: the run writes the images to label under ``annotation/`` and stops, and continues with ``--labels``
    (the command it prints is the run's own, ``argv``, with the options to go on)."""
    args, target = run.args, run.target
    labeller = None
    if not target.has_labels:
        folder = os.path.join(args.logs_dir, "annotation")
        labeller = CsvLabeller(folder, target.trainval, args.labels, root=target.images_dir,
                               rerun=continue_command(args, argv, os.path.join(folder, TEMPLATE)))
    elif args.labels:
        raise UserError(f"--labels {args.labels}: {args.tgt_dataset} carries its identities, which label the drawn "
                        "images; --labels is for a folder: or list: target")
    return SemiSupervision(os.path.join(args.logs_dir, "labelled_set.json"), target.trainval, args.sample,
                           args.label_iteration, args.iteration, args.label_seed, share=run.runtime.share,
                           labeller=labeller, distributed=run.runtime.distributed)


def continue_command(args: argparse.Namespace, argv: list[str] | None, labels: str) -> str:
    """How to go on once ``labels`` is filled: the run's command (``argv``, default the command line) with
    ``--labels`` and, when the iterations before the draw were saved, ``--resume-from``."""
    command = ["python", "semitraining.py", *(sys.argv[1:] if argv is None else argv), "--labels", labels]
    if args.label_iteration > 0:
        command += ["--resume-from", args.logs_dir]
    return f"run {shlex.join(command)}"


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
    train(run, semi_supervision(run, argv))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = adaptation_parser(__doc__, logs_name="semitraining")
    add(parser, "--sample", type=str, default="cluster", choices=SAMPLE_METHODS, help="how to draw labels")
    add(parser, "--label-iteration", type=int, default=ADAPTATION.label_iteration,
        help="iteration at which the labelled set is drawn")
    add(parser, "--label-seed", type=int, default=None,
        help="seed of the labelled set's draw (default: --seed - 1, the release's 0 at its default seed 1)")
    add(parser, "--labels", type=str, default=None, metavar="CSV",
        help="the labels a person gave the drawn images of a folder: or list: target (the filled "
             "annotation/labels_template.csv); without it such a run writes the images to label and stops")
    args = parser.parse_args(argv)
    if args.label_seed is None:
        args.label_seed = args.seed - 1
    return args


if __name__ == "__main__":
    raise SystemExit(run_main(main))
