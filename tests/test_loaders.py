"""The loaders that keep a GPU fed: one worker pool across epochs, the same batches, lazy hand-over on the CPU."""
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from reid.utils.data import loaders, transforms
from reid.utils.data.loaders import EndlessSampler, EpochStream, identity_loader, prefetch_to_device
from reid.utils.data.preprocessor import Preprocessor
from reid.utils.data.sampler import RandomIdentitySampler
from reid.utils.data.transforms import train_transform
from reid.utils.runtime import Runtime

LABELS = np.repeat(np.arange(9), 3)  # 9 identities of 3 images: 4 batches of 2 identities x 2 images
CPU = Runtime(torch.device("cpu"))


class WhoLoads(Dataset):
    """Item i is (i, pid of the process that loaded it)."""

    def __len__(self):
        return len(LABELS)

    def __getitem__(self, index):
        return index, os.getpid()


def sampler():
    return RandomIdentitySampler(LABELS, num_instances=2, batch_size=4, seed=3)


def epochs(batches, count):
    """``count`` passes over ``batches``: the item indices and the loading processes of each pass."""
    passes = []
    for _ in range(count):
        loaded = [(index.tolist(), set(pid.tolist())) for index, pid in batches]
        passes.append(([i for indices, _ in loaded for i in indices], set().union(*(p for _, p in loaded))))
    return passes


def test_stream_gives_the_per_epoch_loaders_batches_from_one_pool_of_workers():
    per_epoch = DataLoader(WhoLoads(), batch_size=4, sampler=sampler(), num_workers=2, drop_last=True)
    stream = EpochStream(DataLoader(WhoLoads(), batch_size=4, sampler=EndlessSampler(sampler()), num_workers=2,
                                    drop_last=True), batches_per_epoch=sampler().num_batches, runtime=CPU)
    restarted, streamed = epochs(per_epoch, 3), epochs(stream, 3)
    assert len(stream) == 4
    assert [indices for indices, _ in streamed] == [indices for indices, _ in restarted]
    assert len({frozenset(pids) for _, pids in restarted}) == 3  # new workers every epoch
    assert len({frozenset(pids) for _, pids in streamed}) == 1  # the same two workers throughout
    assert len(streamed[0][1]) == 2 and os.getpid() not in streamed[0][1]


def test_empty_epochs_end_at_once():
    too_few = RandomIdentitySampler(LABELS, num_instances=2, batch_size=20, seed=0)  # 9 ids < 10 per batch
    stream = EpochStream(DataLoader(WhoLoads(), batch_size=20, sampler=EndlessSampler(too_few), num_workers=1),
                         batches_per_epoch=too_few.num_batches, runtime=CPU)
    assert len(stream) == 0 and list(stream) == [] and list(EndlessSampler(too_few)) == []


def test_on_the_cpu_batches_are_handed_over_one_at_a_time_untouched():
    pulled = []

    def source():
        for number in range(3):
            pulled.append(number)
            yield [torch.full((1, 3, 2, 2), float(number)), "name"]

    batches = prefetch_to_device(source(), CPU)
    first = next(batches)
    assert pulled == [0]  # nothing read ahead: augmentations draw their random numbers in the usual order
    assert first[1] == "name" and first[0].flatten().tolist() == [0.0] * 12
    assert [batch[0][0, 0, 0, 0].item() for batch in batches] == [1.0, 2.0]


def test_batches_finished_on_the_device_equal_the_whole_transforms(tmp_path):
    rng = np.random.default_rng(0)
    items = []
    for index, label in enumerate(LABELS):
        fname = str(tmp_path / f"{index}.jpg")
        Image.fromarray(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)).save(fname)
        items.append((fname, int(label), 0))
    transform = train_transform(64, 32)

    def batches(dataset):
        torch.manual_seed(7)  # no workers: the main process draws the augmentations
        return list(DataLoader(dataset, batch_size=4, sampler=sampler(), drop_last=True))

    whole = batches(Preprocessor(items, transform))
    finished = list(prefetch_to_device(batches(Preprocessor(items, transform.on_host)), CPU, transform.on_device))
    assert len(finished) == 4
    for expected, batch in zip(whole, finished):
        assert batch[0].dtype == torch.float32 and torch.equal(batch[0], expected[0])
        assert batch[1] == expected[1] and torch.equal(batch[2], expected[2])


def test_identity_loader_streams_on_cuda_with_workers_and_restarts_elsewhere():
    items = [(f"{i}.jpg", int(label), 0) for i, label in enumerate(LABELS)]
    cuda = Runtime(torch.device("cuda", 0))  # only built here, never iterated
    streamed = identity_loader(items, lambda image: image, cuda, 4, 2, workers=2, seed=0)
    assert isinstance(streamed, EpochStream) and len(streamed) == 4
    assert isinstance(streamed.loader.sampler, EndlessSampler) and streamed.loader.pin_memory
    assert streamed.finish is None  # a transform that cannot be split runs whole in the workers
    transform = train_transform(64, 32)
    split = identity_loader(items, transform, cuda, 4, 2, workers=2, seed=0)
    assert split.loader.dataset.transform == transform.on_host and split.finish == transform.on_device
    evaluation = transforms.test_transform(64, 32)  # feature extraction: split on CUDA, whole on the CPU
    assert loaders.split_for_device(evaluation, cuda) == (evaluation.on_host, evaluation.on_device)
    assert loaders.split_for_device(evaluation, CPU) == (evaluation, None)
    for runtime, workers in ((cuda, 0), (CPU, 2)):
        plain = identity_loader(items, lambda image: image, runtime, 4, 2, workers=workers, seed=0)
        assert isinstance(plain, DataLoader) and len(plain) == 4


@pytest.mark.parametrize(("cores", "local_world_size", "expected"),
                         [(1, None, 0), (2, None, 1), (16, None, 8), (64, None, 8), (16, "4", 3), (16, "16", 0)])
def test_default_workers_follow_the_cores_available(monkeypatch, cores, local_world_size, expected):
    monkeypatch.setattr(loaders, "available_cores", lambda: cores)
    if local_world_size is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world_size)
    assert loaders.default_workers() == expected
