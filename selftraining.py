"""Step 2: Self-similarity Grouping (SSG, ICCV 2019), unsupervised adaptation to an unlabelled target.

Each iteration: extract source and target features -> source-aware k-reciprocal distance per feature type
(global, upper, lower) -> DBSCAN -> pseudo-labels -> triplet training -> evaluation on the target.

    python selftraining.py --src_dataset market1501 --tgt_dataset dukemtmc --resume logs/market1501 \\
        --iteration 30 --data_dir data --logs_dir logs/market2duke --gpu-devices 0,1 --num-split 2
"""
from __future__ import annotations

import os

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
from reid.evaluators import Evaluator
from reid.trainers import SSGTrainer
from reid.utils.data.loaders import identity_loader
from reid.utils.data.transforms import train_transform
from reid.utils.experiment import start_run
from reid.utils.runtime import run_main, wrap_model


def main(argv: list[str] | None = None) -> None:
    args = build_parser(__doc__, logs_name="selftraining").parse_args(argv)
    checkpoint = check_args(args, int(os.environ.get("WORLD_SIZE", "1")))
    runtime = start_run(args)
    source = datasets.create(args.src_dataset, os.path.join(args.data_dir, args.src_dataset))
    target = datasets.create(args.tgt_dataset, os.path.join(args.data_dir, args.tgt_dataset))

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
    trainer = SSGTrainer(model, runtime, margin=args.margin, num_instances=args.num_instances, amp=args.amp,
                         print_freq=args.print_freq)
    for iteration in range(run.start_iteration, args.iteration):
        grouping, _ = self_similarity_grouping(model, source.trainval, target.trainval, runtime, args, run.eps)
        run.eps = grouping.eps
        check_enough_clusters(grouping, args, iteration)
        kept = grouping.kept
        loader = identity_loader([target.trainval[i] for i in kept], train_transform(
            args.height, args.width, random_crop=False), runtime, args.batch_size, args.num_instances,
            args.workers, args.seed + iteration, labels=grouping.labels[kept])
        losses = [trainer.train(epoch, loader, optimizer) for epoch in range(args.epochs)]
        print(f"iteration {iteration} on the target:")
        record = evaluator.evaluate(target.query, target.gallery, **final_outputs(args, iteration))
        record.update(grouping.summary(type_names(args.num_split)), loss=losses[-1]["loss"] if losses else None)
        run.finish_iteration(iteration, model, optimizer, record)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
