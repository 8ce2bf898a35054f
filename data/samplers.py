"""Samplers with exact resume: the training stream is a pure function of (seed, rank, world size).

The training stream is an infinite sequence of dataset indices: epoch ``e`` is a permutation of
``range(N)`` drawn from ``torch.Generator().manual_seed(seed + e)`` (or ``range(N)`` without shuffling).
Position ``p`` of the stream (``p = e * N + i``) is unique over ranks and epochs; rank ``r`` takes the
positions ``p % world_size == r``. Batches are formed per rank, optionally grouped by image orientation.
Starting at batch ``k`` replays only this index arithmetic, no data is loaded, and yields exactly what an
uninterrupted sampler yields from batch ``k`` on.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from core import comm

__all__ = ["InfiniteGroupedBatchSampler", "InferenceSampler"]


class InfiniteGroupedBatchSampler(Sampler):
    """Infinite, deterministic batch sampler of ``(position, dataset_index)`` pairs for one rank.

    With grouping, each rank keeps two buckets (images with width >= height, and the others, by the
    flags of the *original* images) and emits a batch when a bucket holds ``batch_size`` elements, so
    every batch has a single orientation. Without grouping, consecutive elements form the batches.

    Args:
        aspect_ratio_flags: one bool per dataset image (True: width >= height); None: no grouping.
        batch_size: batch size of this rank.
        size: dataset size; needed only when ``aspect_ratio_flags`` is None.
        shuffle: permute each epoch; else every epoch is ``range(N)``.
        seed: base seed, the same on all ranks; None draws ``comm.shared_random_seed()``.
        rank, world_size: this process's shard of the stream; None asks ``core.comm``.
        group_by_aspect_ratio: group batches by orientation (when ``aspect_ratio_flags`` are given).
        start_batch: the first batch yielded by ``iter()``; see :meth:`set_start_batch`.

    Yields:
        lists of ``batch_size`` tuples ``(position, dataset_index)``.
    """

    def __init__(
        self,
        aspect_ratio_flags: Sequence[bool] | None,
        batch_size: int,
        *,
        size: int | None = None,
        shuffle: bool = True,
        seed: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        group_by_aspect_ratio: bool = True,
        start_batch: int = 0,
    ) -> None:
        if aspect_ratio_flags is None and size is None:
            raise ValueError("InfiniteGroupedBatchSampler needs aspect_ratio_flags or size")
        if aspect_ratio_flags is not None and size is not None and size != len(aspect_ratio_flags):
            raise ValueError(f"size={size} disagrees with {len(aspect_ratio_flags)} aspect_ratio_flags")
        self.size = len(aspect_ratio_flags) if aspect_ratio_flags is not None else int(size)
        if self.size <= 0:
            raise ValueError("InfiniteGroupedBatchSampler needs a non-empty dataset")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        grouping = group_by_aspect_ratio and aspect_ratio_flags is not None
        self.flags = [bool(f) for f in aspect_ratio_flags] if grouping else None
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(comm.shared_random_seed() if seed is None else seed)
        self.rank = comm.get_rank() if rank is None else int(rank)
        self.world_size = comm.get_world_size() if world_size is None else int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world size {self.world_size}")
        self.set_start_batch(start_batch)

    def set_start_batch(self, start_batch: int) -> None:
        """Makes the next ``iter()`` begin at batch ``start_batch`` of the deterministic stream."""
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        self.start_batch = int(start_batch)

    def epoch_indices(self, epoch: int) -> list[int]:
        """The dataset indices of epoch ``epoch`` of the global stream (all ranks)."""
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def _rank_stream(self) -> Iterator[tuple[int, int]]:
        """This rank's ``(position, index)`` elements of the infinite global stream, in order."""
        for epoch in itertools.count():
            first = epoch * self.size
            offset = (self.rank - first) % self.world_size
            indices = self.epoch_indices(epoch)
            for i in range(offset, self.size, self.world_size):
                yield first + i, indices[i]

    def _batches(self) -> Iterator[list[tuple[int, int]]]:
        stream = self._rank_stream()
        if self.flags is None:
            while True:
                yield list(itertools.islice(stream, self.batch_size))
        buckets: tuple[list, list] = ([], [])
        for element in stream:
            bucket = buckets[self.flags[element[1]]]
            bucket.append(element)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                bucket.clear()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return itertools.islice(self._batches(), self.start_batch, None)


class InferenceSampler(Sampler):
    """Splits ``range(size)`` into contiguous, non-overlapping shards, one per rank, covering every index once.

    Shard sizes differ by at most one (the first ``size % world_size`` ranks get one more).

    Args:
        size: dataset size.
        rank, world_size: None asks ``core.comm``.
    """

    def __init__(self, size: int, rank: int | None = None, world_size: int | None = None) -> None:
        if size <= 0:
            raise ValueError(f"InferenceSampler needs a positive size, got {size}")
        self.size = int(size)
        self.rank = comm.get_rank() if rank is None else int(rank)
        self.world_size = comm.get_world_size() if world_size is None else int(world_size)
        shard, left = divmod(self.size, self.world_size)
        begin = self.rank * shard + min(self.rank, left)
        self.indices = range(begin, begin + shard + (self.rank < left))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
