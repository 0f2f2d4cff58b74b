"""Step 1 of SSG: supervised training on the labelled source domain (spec section 3).

The epoch is selected as the release does: by open-reid's ``allshots`` top-1 of the global pool on held-out
training identities (``--num-val``, a tenth of them) or MSMT17's ``list_val``, or is the last one with
``--combine-trainval``; the test query/gallery split only reports the selected model. Every epoch's record and
every test carries its cost (seconds of training, validation and checkpoint, peak memory: reid.utils.cost).

    python source_train.py --dataset market1501 --data_dir data --logs_dir logs/market1501
"""
from __future__ import annotations

import argparse
import os

import torch

from reid import datasets, models
from reid.arguments import (
    ArgumentParser,
    add,
    add_data_args,
    add_model_args,
    add_optim_args,
    add_run_args,
    positive_float,
)
from reid.datasets.base import count_ids, split_validation
from reid.evaluators import Evaluator
from reid.experiment import (
    BEST_MODEL,
    CHECKPOINT,
    WEIGHT_KEYS,
    Scalars,
    check_batch,
    model_config,
    open_dataset,
    open_metrics,
    read_run_metrics,
    resolve_checkpoint,
    resolve_model_options,
    start_run,
    wrap_model,
)
from reid.trainers import SourceTrainer
from reid.utils.cost import finish_record, record_meter
from reid.utils.data.loaders import identity_loader
from reid.utils.data.preprocessor import Item
from reid.utils.data.transforms import train_transform
from reid.utils.runtime import run_main, unwrap
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

    dataset = open_dataset(args.dataset, args)
    train_items, val_items = ([], []) if args.evaluate else training_split(dataset, args)
    model = models.create(args.arch, num_split=args.num_split, num_features=args.features,
                          num_classes=count_ids(train_items), dropout=args.dropout,
                          pretrained=not (args.no_pretrained or checkpoint), pretrained_path=args.pretrained_path)
    start_epoch, best_top1 = 0, 0.0
    if checkpoint:
        load_model_weights(model, checkpoint["state_dict"], args.resume, drop_classifier=args.evaluate)
        start_epoch, best_top1 = checkpoint.get("epoch", 0), checkpoint.get("best_top1", 0.0)
        print(f"resumed {args.resume} at epoch {start_epoch} (best validation top-1 {best_top1:.1f}%)")
    model = wrap_model(model, runtime, args.sync_bn, args.bn_group_size, args.batch_size)
    evaluator = Evaluator(model, runtime, args.height, args.width, workers=args.workers, amp=args.amp,
                          rerank=args.rerank)
    metrics = open_metrics(args, runtime, read_run_metrics(args.logs_dir) if checkpoint else None)

    if not args.evaluate:
        train(args, train_items, val_items, model, runtime, evaluator, metrics, start_epoch, best_top1)
        best = load_checkpoint(os.path.join(args.logs_dir, BEST_MODEL))
        load_model_weights(model, best["state_dict"], BEST_MODEL, drop_classifier=False)
        metrics["selected_epoch"] = int(best["epoch"]) - 1
        print(f"selected epoch {metrics['selected_epoch']}"
              + (" (the last: --combine-trainval)" if args.combine_trainval else " (best validation top-1)"))
    for name in [args.dataset, *args.test_datasets]:
        cost = record_meter(metrics, f"test_{name}", runtime.device)
        test = dataset if name == args.dataset else open_dataset(name, args)
        print(f"test on {name}:")
        save_features = args.save_features and os.path.splitext(args.save_features)[0] + f"_{name}.h5"
        with cost.phase("evaluation"):
            result = evaluator.evaluate(test.query, test.gallery, save_features, args.visrank,
                                        os.path.join(args.logs_dir, "visrank", name))
        finish_record(metrics, f"test_{name}", {**result, "cost": cost.summary()})


def training_split(dataset: datasets.ReIDDataset, args: argparse.Namespace) -> tuple[list[Item], list[Item]]:
    """The training images and the validation images that select the model: the dataset's official
    validation split (MSMT17's list_val) or held-out training identities; none with ``--combine-trainval``
    (the last epoch is kept). The test split never selects a model."""
    if args.combine_trainval:
        return dataset.trainval, []
    if dataset.val:
        print(f"validation: the dataset's validation list ({len(dataset.val)} images)")
        return dataset.trainval, dataset.val
    train_items, val_items = split_validation(dataset.trainval, args.num_val, args.seed)
    print(f"validation: {count_ids(val_items)} identities ({len(val_items)} images) held out of training")
    return train_items, val_items


def train(args, train_items, val_items, model, runtime, evaluator, metrics, start_epoch: int,
          best_top1: float) -> None:
    """Source training with the spec's schedule; the model of the best validation top-1 (or of the last epoch
    without validation) becomes model_best.pth.tar. An epoch's record is written before its checkpoint (a run
    stopped in between redoes the epoch and replaces the record) and again after it, with the checkpoint's
    seconds."""
    loader = identity_loader(train_items, train_transform(args.height, args.width), runtime,
                             args.batch_size, args.num_instances, args.workers, args.seed)
    net = unwrap(model)
    optimizer = torch.optim.Adam([{"params": net.base_parameters(), "lr_mult": 1.0},
                                  {"params": net.new_parameters(), "lr_mult": 3.0}],
                                 lr=args.lr, weight_decay=args.weight_decay)
    trainer = SourceTrainer(model, runtime, margin=args.margin, amp=args.amp, print_freq=args.print_freq)
    scalars = Scalars(args.logs_dir, args.tensorboard and runtime.is_main)
    epochs = [entry for entry in metrics.data.get("epochs", []) if entry["epoch"] < start_epoch]
    for epoch in range(start_epoch, args.epochs):
        cost = record_meter(metrics, f"epoch_{epoch}", runtime.device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(args.lr, epoch, args.epochs) * group["lr_mult"]
        with cost.phase("training"):
            record = {"epoch": epoch, **trainer.train(epoch, loader, optimizer)}
        if val_items and ((epoch + 1) % args.eval_freq == 0 or epoch + 1 == args.epochs):
            print(f"epoch {epoch} validation:")
            with cost.phase("validation"):
                record.update({f"val_{k}": v for k, v in evaluator.validate(val_items).items()})
        is_best = not val_items or record.get("val_top1", -1.0) > best_top1
        best_top1 = max(best_top1, record.get("val_top1", 0.0))
        epochs.append({**record, "cost": cost.summary()})
        metrics["epochs"] = epochs
        scalars.add(epoch, record, prefix="source/")
        with cost.phase("checkpoint"):
            if runtime.is_main:
                no_best_yet = not os.path.exists(os.path.join(args.logs_dir, BEST_MODEL))
                save_checkpoint({"state_dict": net.state_dict(), "epoch": epoch + 1, "best_top1": best_top1,
                                 "config": model_config(args)},
                                os.path.join(args.logs_dir, CHECKPOINT), is_best=is_best or no_best_yet)
            runtime.barrier()  # the next epoch's collectives would count the writing against --dist-timeout
        epochs[-1] = {**record, "cost": cost.summary()}
        finish_record(metrics, "epochs", epochs)
    runtime.barrier()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    add_data_args(parser, cross_domain=False, batch_size=128, num_instances=8)
    add_model_args(parser)
    add_optim_args(parser, lr=3e-4, epochs=150)
    add_run_args(parser, logs_name="source")
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
