"""Samplers: deterministic infinite stream, rank shards, orientation grouping, exact start_batch."""

import itertools

import pytest

from data.samplers import InferenceSampler, InfiniteGroupedBatchSampler

FLAGS = [i % 3 != 0 for i in range(23)]  # 15 landscape, 8 portrait


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_deterministic_given_seed():
    a = take(InfiniteGroupedBatchSampler(FLAGS, 4, seed=3, rank=0, world_size=1), 30)
    b = take(InfiniteGroupedBatchSampler(FLAGS, 4, seed=3, rank=0, world_size=1), 30)
    c = take(InfiniteGroupedBatchSampler(FLAGS, 4, seed=4, rank=0, world_size=1), 30)
    assert a == b and a != c
    assert all(len(batch) == 4 for batch in a)


def test_epochs_are_permutations_and_positions_unique():
    sampler = InfiniteGroupedBatchSampler(None, 5, size=23, seed=1, rank=0, world_size=1, group_by_aspect_ratio=False)
    elements = [e for batch in take(sampler, 23) for e in batch]  # 115 elements = 5 epochs
    assert [p for p, _ in elements] == list(range(115))
    for epoch in range(5):
        assert sorted(i for _, i in elements[epoch * 23 : (epoch + 1) * 23]) == list(range(23))
    assert [i for _, i in elements[:23]] != [i for _, i in elements[23:46]]  # reshuffled
    no_shuffle = InfiniteGroupedBatchSampler(None, 5, size=7, shuffle=False, seed=0, rank=0, world_size=1)
    assert [i for _, i in take(no_shuffle, 3)[2]] == [3, 4, 5, 6, 0]


@pytest.mark.parametrize("grouping", [True, False])
def test_rank_shards_disjoint_and_covering(grouping):
    world = 3
    flags = FLAGS if grouping else None
    per_rank = []
    for rank in range(world):
        sampler = InfiniteGroupedBatchSampler(
            flags, 2, size=23, seed=7, rank=rank, world_size=world, group_by_aspect_ratio=grouping
        )
        per_rank.append([e for batch in take(sampler, 60) for e in batch])
    positions = [{p for p, _ in elements} for elements in per_rank]
    assert all(p % world == r for r, ps in enumerate(positions) for p in ps)
    assert not (positions[0] & positions[1]) and not (positions[1] & positions[2]) and not (positions[0] & positions[2])
    # the first 2 epochs of the global stream are fully covered, each index once per epoch
    reference = InfiniteGroupedBatchSampler(None, 1, size=23, seed=7, rank=0, world_size=1)
    stream = reference.epoch_indices(0) + reference.epoch_indices(1)
    by_position = {p: i for elements in per_rank for p, i in elements}
    assert all(by_position[p] == stream[p] for p in range(46))


def test_grouping_gives_single_orientation_batches():
    for rank in range(2):
        sampler = InfiniteGroupedBatchSampler(FLAGS, 3, seed=0, rank=rank, world_size=2)
        batches = take(sampler, 50)
        assert all(len({FLAGS[i] for _, i in batch}) == 1 for batch in batches)
        assert {FLAGS[batch[0][1]] for batch in batches} == {True, False}


@pytest.mark.parametrize("grouping, world", [(True, 1), (True, 2), (False, 3)])
def test_start_batch_equals_slicing_uninterrupted_stream(grouping, world):
    kwargs = dict(size=23, seed=11, world_size=world, group_by_aspect_ratio=grouping)
    flags = FLAGS if grouping else None
    for rank in range(world):
        full = take(InfiniteGroupedBatchSampler(flags, 3, rank=rank, **kwargs), 80)
        for k in (0, 1, 7, 33, 61):
            resumed = take(InfiniteGroupedBatchSampler(flags, 3, rank=rank, start_batch=k, **kwargs), 80 - k)
            assert resumed == full[k:]
        sampler = InfiniteGroupedBatchSampler(flags, 3, rank=rank, **kwargs)
        sampler.set_start_batch(40)
        assert take(sampler, 10) == full[40:50]


def test_argument_errors():
    with pytest.raises(ValueError, match="aspect_ratio_flags or size"):
        InfiniteGroupedBatchSampler(None, 2, seed=0)
    with pytest.raises(ValueError, match="size=3 disagrees"):
        InfiniteGroupedBatchSampler(FLAGS, 2, size=3, seed=0)
    with pytest.raises(ValueError, match="rank 2"):
        InfiniteGroupedBatchSampler(FLAGS, 2, seed=0, rank=2, world_size=2)


@pytest.mark.parametrize("size, world", [(10, 3), (3, 4), (7, 1), (8, 4)])
def test_inference_sampler_contiguous_shards(size, world):
    shards = [list(InferenceSampler(size, rank, world)) for rank in range(world)]
    assert sum(shards, []) == list(range(size))
    assert all(len(InferenceSampler(size, r, world)) == len(s) for r, s in enumerate(shards))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
