"""The identity sampler: whole identity blocks, one visit per identity, and DDP shards of the same batch."""
import numpy as np
import pytest

from reid.utils.data.sampler import RandomIdentitySampler

LABELS = np.repeat(np.arange(10), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])


def blocks(indices, n):
    return [list(indices[i:i + n]) for i in range(0, len(indices), n)]


def test_blocks_hold_one_identity_and_each_identity_appears_once():
    sampler = RandomIdentitySampler(LABELS, num_instances=4, batch_size=8, seed=3)
    indices = list(sampler)
    assert len(indices) == len(sampler) == 5 * 2 * 4  # 10 ids -> 5 batches of 2 ids
    ids = [LABELS[b][0] for b in blocks(indices, 4)]
    assert all(len(set(LABELS[b])) == 1 for b in blocks(indices, 4))
    assert sorted(ids) == list(range(10))


def test_small_identities_are_drawn_with_replacement_large_ones_without():
    sampler = RandomIdentitySampler(LABELS, num_instances=4, batch_size=8, seed=0)
    for block in blocks(list(sampler), 4):
        if (LABELS[block[0]] == LABELS).sum() >= 4:
            assert len(set(block)) == 4
        else:
            assert len(set(block)) <= (LABELS[block[0]] == LABELS).sum()


def test_last_partial_batch_is_dropped():
    sampler = RandomIdentitySampler(LABELS, num_instances=2, batch_size=6, seed=0)
    assert sampler.num_batches == 3 and len(list(sampler)) == 3 * 6


def test_deterministic_per_seed_and_new_order_each_epoch():
    first = RandomIdentitySampler(LABELS, 4, 8, seed=5)
    second = RandomIdentitySampler(LABELS, 4, 8, seed=5)
    epoch0, epoch1 = list(first), list(first)
    assert epoch0 == list(second)
    assert epoch0 != epoch1
    assert list(second) == epoch1


def test_distributed_shards_make_up_the_single_process_batch():
    single = list(RandomIdentitySampler(LABELS, 2, 8, seed=7))
    shards = [list(RandomIdentitySampler(LABELS, 2, 8, seed=7, num_replicas=2, rank=r)) for r in range(2)]
    per_rank = 4
    for batch in range(len(single) // 8):
        merged = shards[0][batch * per_rank:(batch + 1) * per_rank] + shards[1][batch * per_rank:(batch + 1) * per_rank]
        assert merged == single[batch * 8:(batch + 1) * 8]


def test_batch_must_split_into_blocks():
    with pytest.raises(ValueError, match="multiple of num_instances"):
        RandomIdentitySampler(LABELS, 4, 10)
