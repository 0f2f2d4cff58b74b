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

from reid.adaptation import AdaptationRun, build_parser, type_names
from reid.evaluators import eval_features
from reid.propagation import SAMPLE_METHODS, load_or_draw_labelled_set, num_selected, propagate_labels
from reid.trainers import JointBatches, SemiTrainer, SSGTrainer
from reid.utils.args import add
from reid.utils.runtime import run_main


def learning_rate(base_lr: float, epoch: int, epochs: int) -> float:
    """``base_lr`` for the first 55/70 of an iteration's epochs, a tenth of it after."""
    return base_lr if epoch < round(epochs * 55 / 70) else base_lr * 0.1


def main(argv: list[str] | None = None) -> None:
    parser = build_parser(__doc__, logs_name="semitraining")
    add(parser, "--sample", type=str, default="cluster", choices=SAMPLE_METHODS, help="how to draw labels")
    add(parser, "--label-iteration", type=int, default=5, help="iteration at which the labelled set is drawn")
    args = parser.parse_args(argv)
    run = AdaptationRun(args)  # checks, logs, datasets, source model, before-adaptation evaluation
    true_ids = np.array([pid for _, pid, _ in run.target.trainval])
    options = dict(margin=args.margin, num_instances=args.num_instances, amp=args.amp, print_freq=args.print_freq)
    ssg_trainer, semi_trainer = SSGTrainer(run.model, run.runtime, **options), SemiTrainer(
        run.model, run.runtime, **options)
    for iteration in run.iterations():
        grouping, target_pooled = run.group(iteration)  # features -> distance -> DBSCAN, per feature type
        batches = run.loader(grouping.kept, grouping.labels[grouping.kept], iteration)
        record, trainer = grouping.summary(type_names(args.num_split)), ssg_trainer
        if iteration >= args.label_iteration:
            labelled = load_or_draw_labelled_set(os.path.join(args.logs_dir, "labelled_set.json"),
                                                 run.target.trainval, grouping.labels[:, 0], args.sample)
            propagation = propagate_labels(eval_features(target_pooled), labelled, true_ids[labelled])
            n = num_selected(iteration, len(propagation.indices))
            chosen = np.concatenate([labelled, propagation.indices[:n]])
            ids = np.concatenate([true_ids[labelled], propagation.labels[:n]])
            batches = JointBatches(batches, run.loader(chosen, ids, iteration, random_crop=True))
            trainer = semi_trainer
            correct = propagation.labels[:n] == true_ids[propagation.indices[:n]]
            record.update(labelled=int(len(labelled)), propagated=n,
                          propagated_accuracy=100 * float(correct.mean()) if n else None)
        for epoch in range(args.epochs):
            for group in run.optimizer.param_groups:
                group["lr"] = learning_rate(args.lr, epoch, args.epochs)
            record["loss"] = trainer.train(epoch, batches, run.optimizer)["loss"]
        record.update(run.evaluate(iteration))
        run.finish_iteration(iteration, record)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
