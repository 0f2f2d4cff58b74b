"""Step 3: clustering-guided semi-supervised training (SSG++): SSG plus one labelled image per cluster.

Iterations before ``--label-iteration`` are plain SSG. Then one target image per global cluster is labelled
(``--sample cluster``; ``random`` draws as many images uniformly), saved under the logs dir, and every
iteration propagates those labels to the most confident unlabelled images; a labelled batch joins each
cluster batch in the loss.

    python semitraining.py --src_dataset dukemtmc --tgt_dataset market1501 --resume logs/dukemtmc \\
        --iteration 30 --data_dir data --logs_dir logs/duke2market_semi --gpu-devices 0,1 --num-split 2 \\
        --sample cluster
"""
from __future__ import annotations

import os

import numpy as np
import torch

from reid import datasets, models
from reid.adaptation import (
    AdaptationRun,
    build_parser,
    check_args,
    check_enough_clusters,
    final_outputs,
    self_similarity_grouping,
    type_names,
)
from reid.evaluators import Evaluator, eval_features
from reid.propagation import SAMPLE_METHODS, load_or_draw_labelled_set, num_selected, propagate_labels
from reid.trainers import JointBatches, SemiTrainer, SSGTrainer
from reid.utils.args import add
from reid.utils.data.loaders import identity_loader
from reid.utils.data.transforms import train_transform
from reid.utils.experiment import start_run
from reid.utils.runtime import run_main, wrap_model


def learning_rate(base_lr: float, epoch: int, epochs: int) -> float:
    """``base_lr`` for the first 55/70 of an iteration's epochs, a tenth of it after."""
    return base_lr if epoch < round(epochs * 55 / 70) else base_lr * 0.1


def main(argv: list[str] | None = None) -> None:
    parser = build_parser(__doc__, logs_name="semitraining")
    add(parser, "--sample", type=str, default="cluster", choices=SAMPLE_METHODS, help="how to draw labels")
    add(parser, "--label-iteration", type=int, default=5, help="iteration at which the labelled set is drawn")
    args = parser.parse_args(argv)
    checkpoint = check_args(args, int(os.environ.get("WORLD_SIZE", "1")))
    runtime = start_run(args)
    source = datasets.create(args.src_dataset, os.path.join(args.data_dir, args.src_dataset))
    target = datasets.create(args.tgt_dataset, os.path.join(args.data_dir, args.tgt_dataset))
    true_ids = np.array([pid for _, pid, _ in target.trainval])

    run = AdaptationRun(args, runtime, checkpoint)
    model = models.create(args.arch, num_split=args.num_split, num_features=args.features, pretrained=False)
    run.load_model(model)
    model = wrap_model(model, runtime, args.sync_bn)
    evaluator = Evaluator(model, runtime, args.height, args.width, workers=args.workers)
    if "before" not in run.metrics:
        print("before adaptation:")
        run.metrics["before"] = evaluator.evaluate(target.query, target.gallery)

    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    run.load_optimizer(optimizer)
    options = dict(margin=args.margin, num_instances=args.num_instances, amp=args.amp, print_freq=args.print_freq)
    ssg_trainer, semi_trainer = SSGTrainer(model, runtime, **options), SemiTrainer(model, runtime, **options)
    labelled_path = os.path.join(args.logs_dir, "labelled_set.json")
    for iteration in range(run.start_iteration, args.iteration):
        grouping, target_pooled = self_similarity_grouping(model, source.trainval, target.trainval, runtime,
                                                           args, run.eps)
        run.eps = grouping.eps
        check_enough_clusters(grouping, args, iteration)
        kept = grouping.kept
        batches = identity_loader([target.trainval[i] for i in kept], train_transform(
            args.height, args.width, random_crop=False), runtime, args.batch_size, args.num_instances,
            args.workers, args.seed + iteration, labels=grouping.labels[kept])
        record = grouping.summary(type_names(args.num_split))
        trainer = ssg_trainer
        if iteration >= args.label_iteration:
            trainer = semi_trainer
            labelled = load_or_draw_labelled_set(labelled_path, target.trainval, grouping.labels[:, 0], args.sample)
            propagation = propagate_labels(eval_features(target_pooled), labelled, true_ids[labelled])
            n = num_selected(iteration, len(propagation.indices), args.iteration)
            chosen = np.concatenate([labelled, propagation.indices[:n]])
            ids = np.concatenate([true_ids[labelled], propagation.labels[:n]])
            batches = JointBatches(batches, identity_loader(
                [target.trainval[i] for i in chosen], train_transform(args.height, args.width), runtime,
                args.batch_size, args.num_instances, args.workers, args.seed + iteration, labels=ids))
            record.update(labelled=int(len(labelled)), propagated=n, propagated_accuracy=100 * float(
                np.mean(propagation.labels[:n] == true_ids[propagation.indices[:n]])) if n else None)
        for epoch in range(args.epochs):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(args.lr, epoch, args.epochs)
            record["loss"] = trainer.train(epoch, batches, optimizer)["loss"]
        print(f"iteration {iteration} on the target:")
        record.update(evaluator.evaluate(target.query, target.gallery, **final_outputs(args, iteration)))
        run.finish_iteration(iteration, model, optimizer, record)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
