"""Step 1 of SSG: supervised training on the labelled source domain (spec section 3).

    python source_train.py --dataset market1501 --data_dir data --logs_dir logs/market1501
"""
from __future__ import annotations

import argparse
import os

import torch

from reid import datasets, models
from reid.evaluators import Evaluator
from reid.trainers import SourceTrainer
from reid.utils.args import ArgumentParser, add, add_data_args, add_model_args, add_optim_args, add_run_args
from reid.utils.data.loaders import identity_loader
from reid.utils.data.transforms import train_transform
from reid.utils.experiment import (
    WEIGHT_KEYS,
    Scalars,
    check_batch,
    model_config,
    resolve_checkpoint,
    resolve_model_options,
    start_run,
)
from reid.utils.logging import MetricsLog
from reid.utils.runtime import run_main, unwrap, wrap_model
from reid.utils.serialization import load_checkpoint, load_model_weights, save_checkpoint


def learning_rate(base_lr: float, epoch: int, epochs: int) -> float:
    """Constant for the first two thirds, then decays by 1000x over the last third (100 + 50 of 150)."""
    decay_start = round(epochs * 2 / 3)
    if epoch < decay_start:
        return base_lr
    return base_lr * 0.001 ** ((epoch - decay_start) / (epochs - decay_start))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_batch(args.batch_size, args.num_instances)
    checkpoint = load_checkpoint(resolve_checkpoint(args.resume)) if args.resume else None
    resolve_model_options(args, checkpoint, args.resume, keys=WEIGHT_KEYS)
    models.check_num_split(args.height, args.num_split)
    runtime = start_run(args)

    dataset = datasets.create(args.dataset, os.path.join(args.data_dir, args.dataset))
    model = models.create(args.arch, num_split=args.num_split, num_features=args.features,
                          num_classes=0 if args.evaluate else dataset.num_trainval_ids, dropout=args.dropout,
                          pretrained=not (args.no_pretrained or checkpoint), pretrained_path=args.pretrained_path)
    start_epoch, best_top1 = 0, 0.0
    if checkpoint:
        load_model_weights(model, checkpoint["state_dict"], args.resume, drop_classifier=args.evaluate)
        start_epoch, best_top1 = checkpoint.get("epoch", 0), checkpoint.get("best_top1", 0.0)
        print(f"resumed {args.resume} at epoch {start_epoch} (best top-1 {best_top1:.1f}%)")
    model = wrap_model(model, runtime, args.sync_bn)
    evaluator = Evaluator(model, runtime, args.height, args.width, workers=args.workers, rerank=args.rerank)
    metrics = MetricsLog(os.path.join(args.logs_dir, "metrics.json"), resume=bool(checkpoint), write=runtime.is_main)

    if not args.evaluate:
        best_top1 = train(args, dataset, model, runtime, evaluator, metrics, start_epoch, best_top1)
        best = load_checkpoint(os.path.join(args.logs_dir, "model_best.pth.tar"))
        load_model_weights(model, best["state_dict"], "model_best.pth.tar", drop_classifier=False)
    for name in [args.dataset, *args.test_datasets]:
        test = dataset if name == args.dataset else datasets.create(name, os.path.join(args.data_dir, name))
        print(f"test on {name}:")
        save_features = args.save_features and os.path.splitext(args.save_features)[0] + f"_{name}.h5"
        metrics[f"test_{name}"] = evaluator.evaluate(test.query, test.gallery, save_features, args.visrank,
                                                     os.path.join(args.logs_dir, "visrank", name))


def train(args, dataset, model, runtime, evaluator, metrics, start_epoch: int, best_top1: float) -> float:
    """Source training with the spec's schedule; returns the best validation top-1."""
    loader = identity_loader(dataset.trainval, train_transform(args.height, args.width), runtime,
                             args.batch_size, args.num_instances, args.workers, args.seed)
    net = unwrap(model)
    optimizer = torch.optim.Adam([{"params": net.base_parameters(), "lr_mult": 1.0},
                                  {"params": net.new_parameters(), "lr_mult": 3.0}],
                                 lr=args.lr, weight_decay=args.weight_decay)
    trainer = SourceTrainer(model, runtime, margin=args.margin, amp=args.amp, print_freq=args.print_freq)
    scalars = Scalars(args.logs_dir, args.tensorboard and runtime.is_main)
    epochs = metrics.data.setdefault("epochs", [])
    for epoch in range(start_epoch, args.epochs):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(args.lr, epoch, args.epochs) * group["lr_mult"]
        record = {"epoch": epoch, **trainer.train(epoch, loader, optimizer)}
        last = epoch + 1 == args.epochs
        if (epoch + 1) % args.eval_freq == 0 or last:
            record.update(evaluator.evaluate(dataset.query, dataset.gallery))
        is_best = record.get("top1", -1.0) > best_top1
        best_top1 = max(best_top1, record.get("top1", 0.0))
        epochs.append(record)
        metrics["epochs"] = epochs
        scalars.add(epoch, record, prefix="source/")
        if runtime.is_main:
            no_best_yet = not os.path.exists(os.path.join(args.logs_dir, "model_best.pth.tar"))
            save_checkpoint({"state_dict": net.state_dict(), "epoch": epoch + 1, "best_top1": best_top1,
                             "config": model_config(args)},
                            os.path.join(args.logs_dir, "checkpoint.pth.tar"), is_best=is_best or no_best_yet)
    runtime.barrier()
    return best_top1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    add_data_args(parser, cross_domain=False, batch_size=128, num_instances=8)
    add_model_args(parser)
    add_optim_args(parser, lr=3e-4, epochs=150)
    add_run_args(parser, logs_name="source")
    add(parser, "--eval-freq", type=int, default=10, help="epochs between evaluations on the source test set")
    add(parser, "--test-datasets", nargs="*", default=[], choices=datasets.names(),
        help="also evaluate the final model on these datasets (e.g. the target: direct transfer)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
