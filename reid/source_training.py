"""The life of a source training run (``source_train.py``): set-up, the validation split that selects the epoch,
records, checkpoints, continuing, and the final tests (docs/algorithm.md, "Source training").

The epoch is selected as the release does: by open-reid's ``allshots`` top-1 of the global pool on held-out
training identities (``--num-val``, a tenth of them) or MSMT17's ``list_val``, or is the last one with
``--combine-trainval``; the test query/gallery split only reports the selected model.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Iterator

import torch

from reid import datasets, models
from reid.cost.meter import finish_record
from reid.datasets.base import count_ids, split_validation
from reid.evaluators import Evaluator
from reid.experiment import (
    WEIGHT_KEYS,
    Run,
    check_batch,
    check_images,
    open_dataset,
    resolve_checkpoint,
    resolve_model_options,
    resumed_checkpoint,
    wrap_model,
)
from reid.utils.data.loaders import identity_loader
from reid.utils.data.preprocessor import Item
from reid.utils.data.transforms import train_transform
from reid.utils.errors import UserError
from reid.utils.records import BEST_MODEL
from reid.utils.runtime import unwrap
from reid.utils.serialization import is_classifier_key, load_checkpoint, load_model_weights, strip_module_prefix


def learning_rate(base_lr: float, epoch: int, epochs: int) -> float:
    """Constant for the first two thirds, then decays by 1000x over the last third (100 + 50 of 150)."""
    decay_start = round(epochs * 2 / 3)
    if epoch < decay_start:
        return base_lr
    return base_lr * 0.001 ** ((epoch - decay_start) / (epochs - decay_start))


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


def _initial_weights(args: argparse.Namespace) -> dict | None:
    """The ``--resume`` checkpoint (weights to start from, or with --evaluate the model to test), read before any
    expensive work, with the model options it records settled in ``args``."""
    if not args.resume:
        return None
    if args.pretrained_path:
        raise UserError("--pretrained-path: the model starts from the --resume checkpoint; give one of them")
    checkpoint = load_checkpoint(resolve_checkpoint(args.resume))
    resolve_model_options(args, checkpoint, args.resume, keys=WEIGHT_KEYS)
    return checkpoint


def _classifier_fits(model: models.ResNet, state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether the checkpoint's classifier has this model's shape (the same number of training identities)."""
    own = {key: value.shape for key, value in model.state_dict().items() if is_classifier_key(key)}
    given = {key: value.shape for key, value in strip_module_prefix(state_dict).items() if is_classifier_key(key)}
    return bool(own) and own == given


class SourceRun(Run):
    """A source training run; construction does the set-up.

    The model starts from ImageNet weights (``--pretrained-path``, or random with ``--no-pretrained``), from the
    weights of ``--resume`` (its classifier too when it has as many identities), or continues a stopped run
    (``--resume-from``, or after torchrun restarted its worker group: this run's newest checkpoint). Checkpoints
    hold ``state_dict``, ``optimizer``, ``epoch`` (finished epochs) and ``best_top1`` (the best validation
    top-1), besides what :meth:`reid.experiment.Run.save` adds. :attr:`cost` measures the record being made: an
    epoch's ``training``, ``validation`` and ``checkpoint``, or a test's ``evaluation``.
    """

    def __init__(self, args: argparse.Namespace):
        check_batch(args.batch_size, args.num_instances)
        resumed = resumed_checkpoint(args)
        weights = _initial_weights(args) if resumed is None else None
        if resumed is None and weights is None:
            resolve_model_options(args, None)  # the paper's model where not given
        models.check_num_split(args.height, args.num_split)
        super().__init__(args)
        self.dataset = open_dataset(args.dataset, args)
        self.train_items, self.val_items = ([], []) if args.evaluate else training_split(self.dataset, args)
        if args.check_images:
            check_images(self.used_images(), self.runtime, args.workers)
        continued = self.continue_from(resumed, unit="epoch")
        self.start_epoch = continued["epoch"] if continued else 0
        self.best_top1 = continued.get("best_top1", 0.0) if continued else 0.0

        model = models.create(args.arch, num_split=args.num_split, num_features=args.features,
                              num_classes=count_ids(self.train_items), dropout=args.dropout,
                              pretrained=not (args.no_pretrained or continued or weights),
                              pretrained_path=None if continued else args.pretrained_path)
        if continued:
            load_model_weights(model, continued["state_dict"], args.resume_from or args.logs_dir, drop_classifier=False)
            print(f"continuing {args.resume_from or args.logs_dir} at epoch {self.start_epoch} "
                  f"(best validation top-1 {self.best_top1:.1f}%)")
        elif weights:
            keep_classifier = not args.evaluate and _classifier_fits(model, weights["state_dict"])
            load_model_weights(model, weights["state_dict"], args.resume, drop_classifier=not keep_classifier)
            print(f"weights from {args.resume}" + ("" if keep_classifier or args.evaluate else
                                                    " (its classifier does not fit this dataset: a new one)"))
        self.model = wrap_model(model, self.runtime, args.sync_bn, args.bn_group_size, args.batch_size)
        self.optimizer = torch.optim.Adam([{"params": model.base_parameters(), "lr_mult": 1.0},
                                           {"params": model.new_parameters(), "lr_mult": 3.0}],
                                          lr=args.lr, weight_decay=args.weight_decay)
        if continued:
            self.restore(continued, self.optimizer)
        self.evaluator = Evaluator(self.model, self.runtime, args.height, args.width, workers=args.workers,
                                   amp=args.amp, rerank=args.rerank)
        self.epoch_records = [entry for entry in self.metrics.data.get("epochs", [])
                              if entry["epoch"] < self.start_epoch]

    def used_images(self) -> dict[str, list[Item]]:
        """The images this run reads, by ``dataset subset``: the training and validation images, and the query and
        gallery of every dataset it tests on."""
        args, training = self.args, self.train_items + self.val_items
        subsets = {f"{args.dataset} training": training} if training else {}
        for name in dict.fromkeys([args.dataset, *args.test_datasets]):
            test = self.dataset if name == args.dataset else open_dataset(name, args)
            subsets.update({f"{name} query": test.query, f"{name} gallery": test.gallery})
        return subsets

    def loader(self):
        """Identity-balanced batches of the training images, ``--num-instances`` per identity, from the first
        epoch left to train."""
        args = self.args
        return identity_loader(self.train_items, train_transform(args.height, args.width), self.runtime,
                               args.batch_size, args.num_instances, args.workers, args.seed,
                               first_epoch=self.start_epoch)

    def epochs(self) -> Iterator[int]:
        """The epochs left to train; each starts its own record (:attr:`cost`) at its learning rate."""
        for epoch in range(self.start_epoch, self.args.epochs):
            self.record(f"epoch_{epoch}")
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate(self.args.lr, epoch, self.args.epochs) * group["lr_mult"]
            yield epoch

    def validate(self, epoch: int) -> dict:
        """The validation split's allshots top-1 and mAP (``val_top1``, ``val_mAP``) every ``--eval-freq`` epochs
        and at the last one; nothing without a validation split."""
        if not self.val_items or ((epoch + 1) % self.args.eval_freq and epoch + 1 != self.args.epochs):
            return {}
        print(f"epoch {epoch} validation:")
        with self.cost.phase("validation"):
            return {f"val_{key}": value for key, value in self.evaluator.validate(self.val_items).items()}

    def finish_epoch(self, epoch: int, record: dict) -> None:
        """Write the epoch's record and checkpoint; model_best.pth.tar follows a strictly higher validation top-1
        (every epoch without validation). The record is written before the checkpoint (a run stopped in between
        redoes the epoch and replaces the record) and again after it, with the checkpoint's seconds."""
        is_best = not self.val_items or record.get("val_top1", -1.0) > self.best_top1
        self.best_top1 = max(self.best_top1, record.get("val_top1", 0.0))
        self.epoch_records.append({**record, "cost": self.cost.summary()})
        self.metrics["epochs"] = self.epoch_records
        if self.runtime.is_main:
            self.scalars.add(epoch, record, prefix="source/")
        no_best_yet = not os.path.exists(os.path.join(self.args.logs_dir, BEST_MODEL))
        self.save({"state_dict": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                   "epoch": epoch + 1, "best_top1": self.best_top1}, is_best=is_best or no_best_yet)
        self.epoch_records[-1] = {**record, "cost": self.cost.summary()}
        finish_record(self.metrics, "epochs", self.epoch_records)
        self.runtime.barrier()

    def select_best(self) -> None:
        """Load model_best.pth.tar, the selected epoch, into the model."""
        best = load_checkpoint(os.path.join(self.args.logs_dir, BEST_MODEL))
        load_model_weights(self.model, best["state_dict"], BEST_MODEL, drop_classifier=False)
        self.metrics["selected_epoch"] = int(best["epoch"]) - 1
        print(f"selected epoch {self.metrics['selected_epoch']}"
              + (" (the last: --combine-trainval)" if self.args.combine_trainval else " (best validation top-1)"))

    def test(self, name: str) -> None:
        """Evaluate the model on the query/gallery split of dataset ``name`` (``test_<name>`` in metrics.json)."""
        args = self.args
        self.record(f"test_{name}")
        test = self.dataset if name == args.dataset else open_dataset(name, args)
        print(f"test on {name}:")
        save_features = args.save_features and os.path.splitext(args.save_features)[0] + f"_{name}.h5"
        with self.cost.phase("evaluation"):
            result = self.evaluator.evaluate(test.query, test.gallery, save_features, args.visrank,
                                             os.path.join(args.logs_dir, "visrank", name))
        self.finish(f"test_{name}", result)
