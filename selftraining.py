"""Step 2: Self-similarity Grouping (SSG, ICCV 2019), unsupervised adaptation to an unlabelled target.

Each iteration: extract source and target features -> source-aware k-reciprocal distance per feature type
(global, upper, lower) -> DBSCAN -> pseudo-labels -> triplet training -> evaluation on the target.

    python selftraining.py --src_dataset market1501 --tgt_dataset dukemtmc --resume logs/market1501 \\
        --iteration 30 --data_dir data --logs_dir logs/market2duke --gpu-devices 0,1 --num-split 2
"""
from __future__ import annotations

from reid.adaptation import AdaptationRun, build_parser, type_names
from reid.trainers import SSGTrainer
from reid.utils.runtime import run_main


def main(argv: list[str] | None = None) -> None:
    args = build_parser(__doc__, logs_name="selftraining").parse_args(argv)
    run = AdaptationRun(args)  # checks, logs, datasets, source model, before-adaptation evaluation
    trainer = SSGTrainer(run.model, run.runtime, margin=args.margin, num_instances=args.num_instances,
                         amp=args.amp, print_freq=args.print_freq)
    for iteration in run.iterations():
        grouping, _ = run.group(iteration)  # features -> distance -> DBSCAN, per feature type
        with run.cost.phase("training"):
            loader = run.loader(grouping.kept, grouping.labels[grouping.kept], iteration)
            losses = [trainer.train(epoch, loader, run.optimizer) for epoch in range(args.epochs)]
        record = run.evaluate(iteration)
        record.update(grouping.summary(type_names(args.num_split)), loss=losses[-1]["loss"] if losses else None)
        run.finish_iteration(iteration, record)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
