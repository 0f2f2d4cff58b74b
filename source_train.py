"""Step 1 of SSG: supervised training on the labelled source domain (docs/algorithm.md, "Source training").

Every epoch trains on identity-balanced batches (batch-hard triplet + cross-entropy), is validated on held-out
training identities (``--num-val``) or MSMT17's ``list_val``, and is kept as ``model_best.pth.tar`` when its
validation score is the best so far; the selected model is then tested on the query/gallery splits.

    python source_train.py --dataset market1501 --data_dir data --logs_dir logs/market1501
"""
from __future__ import annotations

import argparse

from reid import datasets
from reid.arguments import source_parser
from reid.source_training import SourceRun
from reid.trainers import SourceTrainer
from reid.utils.cli import add, positive_float
from reid.utils.runtime import run_main


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run = SourceRun(args)  # checks, logs, dataset and validation split, model, Adam; or the run it continues
    if not args.evaluate:
        trainer = SourceTrainer(run.model, run.runtime, margin=args.margin, amp=args.amp, print_freq=args.print_freq)
        loader = run.loader()
        for epoch in run.epochs():
            with run.cost.phase("training"):
                record = {"epoch": epoch, **trainer.train(epoch, loader, run.optimizer)}
            record.update(run.validate(epoch))
            run.finish_epoch(epoch, record)
        run.select_best()
    for name in [args.dataset, *args.test_datasets]:
        run.test(name)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = source_parser(__doc__)
    add(parser, "--num-val", type=positive_float, default=0.1,
        help="training identities held out to select the epoch: a fraction below 1 (the release's 0.1) or a "
             "count; MSMT17 validates on its list_val instead")
    add(parser, "--combine-trainval", action="store_true",
        help="train on every training identity and keep the last epoch (no validation)")
    add(parser, "--eval-freq", type=int, default=1, help="epochs between evaluations on the validation split")
    add(parser, "--test-datasets", nargs="*", default=[], choices=datasets.names(),
        help="also evaluate the final model on these datasets (e.g. the target: direct transfer)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
