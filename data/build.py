"""Dataset dict collection and the train/test data loaders.

The train loader is an infinite, deterministic stream: the sampler fixes which image comes at each stream
position, and :class:`MapDataset` seeds the augmentation RNGs from ``(seed, position)``. A batch therefore
depends only on the seed and its index, not on the number of workers or on where training was resumed.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from core import comm

from . import preflight
from .catalog import DatasetCatalog, MetadataCatalog
from .samplers import InferenceSampler, InfiniteGroupedBatchSampler

__all__ = [
    "MapDataset",
    "TrainLoader",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "get_detection_dataset_dicts",
    "trivial_batch_collator",
]

logger = logging.getLogger(__name__)


def _has_instances(record: dict) -> bool:
    return any(not a.get("iscrowd", 0) for a in record.get("annotations", []))


def _class_table(dicts: list[dict], class_names: Sequence[str] | None, columns: int = 3) -> str:
    """Text table of non-crowd instance counts per category."""
    counts = Counter(a["category_id"] for d in dicts for a in d.get("annotations", []) if not a.get("iscrowd", 0))
    ids = range(len(class_names)) if class_names else sorted(counts)
    cells = [(str(class_names[i]) if class_names else str(i), counts.get(i, 0)) for i in ids]
    cells.append(("total", sum(counts.values())))
    width = max(len(name) for name, _ in cells)
    rows = [cells[i : i + columns] for i in range(0, len(cells), columns)]
    header = " | ".join(f"{'category':<{width}} | #instances" for _ in range(min(columns, len(cells))))
    lines = [" | ".join(f"{name:<{width}} | {n:>10}" for name, n in row) for row in rows]
    return "\n".join([header, "-" * len(header), *lines])


def _check_same_classes(names: list[str]) -> list[str] | None:
    classes = [MetadataCatalog.get(n).get("thing_classes") for n in names]
    for name, c in zip(names[1:], classes[1:]):
        if c is not None and classes[0] is not None and c != classes[0]:
            raise ValueError(f"Datasets '{names[0]}' and '{name}' have different thing_classes: {classes[0]} vs {c}")
    return classes[0]


def _check_category_ids(dicts: list[dict], class_names: Sequence[str] | None, names: list[str]) -> None:
    if not class_names:
        return
    for d in dicts:
        for a in d.get("annotations", []):
            if not 0 <= a["category_id"] < len(class_names):
                raise ValueError(
                    f"{d['file_name']} (dataset {names}) has category_id {a['category_id']} outside "
                    f"0..{len(class_names) - 1} of thing_classes"
                )


def get_detection_dataset_dicts(
    names: str | Sequence[str], filter_empty: bool = True, min_keypoints: int = 0, check_images: bool = True
) -> list[dict]:
    """Concatenates the dataset dicts of registered datasets.

    Args:
        names: one dataset name or several.
        filter_empty: drop images without any non-crowd annotation (training).
        min_keypoints: detectron2 compatibility; keypoints are not supported, so it must be 0.
        check_images: before anything is filtered, check every image file (exists, complete, header parses, size
            equals the dict's ``height``/``width``) with :func:`data.preflight.check_images`, so that a bad file
            stops the run now, listed with all the others, instead of at the training iteration that reaches it.
            Turn it off in a LazyConfig with ``dataloader.train.dataset.check_images=False``.

    Returns:
        list of dataset dicts.

    Raises:
        data.preflight.BadImagesError: ``check_images`` found bad images (a ``ValueError`` listing all of them).
    """
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError("get_detection_dataset_dicts needs at least one dataset name")
    if min_keypoints:
        raise ValueError(f"min_keypoints={min_keypoints}: keypoints are not supported")
    dicts = []
    for name in names:
        part = DatasetCatalog.get(name)
        if not part:
            raise ValueError(f"Dataset '{name}' is empty")
        dicts.extend(part)
    if check_images:
        preflight.check_images(dicts, dataset_name=", ".join(names))
    if filter_empty:
        before = len(dicts)
        dicts = [d for d in dicts if _has_instances(d)]
        logger.info(f"Removed {before - len(dicts)} images without annotations; {len(dicts)} images left")
        if not dicts:
            raise ValueError(f"No images with annotations left in {names} after filter_empty")
    class_names = _check_same_classes(names)
    _check_category_ids(dicts, class_names, names)
    logger.info(f"Instances per category in {names}:\n{_class_table(dicts, class_names)}")
    return dicts


@contextlib.contextmanager
def _seeded_rngs(seed: int) -> Iterator[None]:
    """Seeds python ``random``, ``numpy.random`` and torch's CPU generator; restores their states on exit."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def sample_seed(base_seed: int, position: int) -> int:
    """A 32-bit seed that depends only on ``(base_seed, position)``."""
    return int(np.random.SeedSequence([int(base_seed) % 2**63, int(position)]).generate_state(1)[0])


class MapDataset(Dataset):
    """Applies ``mapper`` to dataset dicts with augmentation randomness fixed by the stream position.

    ``dataset[(position, index)]`` maps ``dicts[index]`` under RNGs seeded from ``(seed, position)``;
    ``dataset[index]`` (test time) seeds from ``(seed, index)``. The caller's RNG states are restored
    afterwards. Mapper errors propagate (with the image's file name added as a note); nothing is skipped.

    Args:
        dicts: dataset dicts.
        mapper: callable mapping one dataset dict to a model input dict.
        seed: base seed of the augmentation randomness.
    """

    def __init__(self, dicts: Sequence[dict], mapper: Callable[[dict], dict], seed: int = 0) -> None:
        self.dicts = dicts
        self.mapper = mapper
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dicts)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        position, index = item if isinstance(item, (tuple, list)) else (item, item)
        record = self.dicts[index]
        with _seeded_rngs(sample_seed(self.seed, position)):
            try:
                return self.mapper(record)
            except Exception as e:
                e.add_note(f"while mapping {record.get('file_name')} (dataset index {index}, position {position})")
                raise


def trivial_batch_collator(batch: list[dict]) -> list[dict]:
    """Keeps a batch as the list of mapped dicts."""
    return batch


def _as_dicts(dataset: Sequence[dict]) -> Sequence[dict]:
    if isinstance(dataset, (str, bytes)) or not isinstance(dataset, Sequence):
        raise TypeError(f"Expected a list of dataset dicts, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError("The dataset is empty")
    return dataset


class TrainLoader:
    """Infinite, deterministic train loader; each item is a list of mapped dicts (this rank's batch).

    Attributes:
        dataset_size: number of dataset dicts.
        total_batch_size: images per iteration over all ranks.
        batch_size_per_rank: images per iteration on this rank.
        seed: base seed of sampling and augmentation.
    """

    def __init__(self, dataset: MapDataset, sampler: InfiniteGroupedBatchSampler, total_batch_size: int, num_workers):
        self.dataset = dataset
        self.sampler = sampler
        self.num_workers = int(num_workers)
        self.dataset_size = len(dataset)
        self.total_batch_size = int(total_batch_size)
        self.batch_size_per_rank = sampler.batch_size
        self.seed = sampler.seed
        self._start_iter = 0

    def set_start_iter(self, it: int) -> None:
        """Makes the next ``iter()`` start at batch ``it`` of the deterministic stream (for resuming)."""
        if it < 0:
            raise ValueError(f"start iteration must be >= 0, got {it}")
        self._start_iter = int(it)

    def __iter__(self) -> Iterator[list[dict]]:
        sampler = copy.copy(self.sampler)  # iterators made earlier keep their own start
        sampler.set_start_batch(self._start_iter)
        loader = DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=trivial_batch_collator,
            generator=torch.Generator().manual_seed(self.seed),  # keeps the caller's global RNG untouched
        )
        return _iterate_and_clean_up(loader)


def _iterate_and_clean_up(loader: DataLoader) -> Iterator[list[dict]]:
    """Iterates ``loader``; stops its worker processes as soon as iteration fails or is abandoned.

    Without this, an exception keeps the DataLoader iterator alive in a reference cycle of its traceback; its
    workers are then only stopped by the garbage collector, after a 5 s timeout per worker.
    """
    iterator = iter(loader)
    try:
        yield from iterator
    finally:
        shutdown = getattr(iterator, "_shutdown_workers", None)  # what the iterator's __del__ calls
        if shutdown is not None:
            shutdown()


def build_detection_train_loader(
    dataset: Sequence[dict],
    mapper: Callable[[dict], dict],
    total_batch_size: int,
    num_workers: int = 0,
    aspect_ratio_grouping: bool = True,
    seed: int | None = None,
) -> TrainLoader:
    """Builds the infinite training loader.

    Args:
        dataset: list of dataset dicts (e.g. from :func:`get_detection_dataset_dicts`).
        mapper: callable mapping a dataset dict to a model input dict (e.g. ``DetrDatasetMapper``).
        total_batch_size: images per iteration summed over ranks; must be divisible by the world size.
        num_workers: DataLoader worker processes; the batches do not depend on it.
        aspect_ratio_grouping: batch images of one orientation together.
        seed: base seed; None draws one shared by all ranks.

    Returns:
        a :class:`TrainLoader`.
    """
    dicts = _as_dicts(dataset)
    world_size = comm.get_world_size()
    if total_batch_size <= 0 or total_batch_size % world_size:
        raise ValueError(f"total_batch_size={total_batch_size} must be a positive multiple of world size {world_size}")
    flags = [d["width"] >= d["height"] for d in dicts] if aspect_ratio_grouping else None
    sampler = InfiniteGroupedBatchSampler(
        flags,
        total_batch_size // world_size,
        size=len(dicts),
        seed=seed,
        group_by_aspect_ratio=aspect_ratio_grouping,
    )
    return TrainLoader(MapDataset(dicts, mapper, seed=sampler.seed), sampler, total_batch_size, num_workers)


def build_detection_test_loader(
    dataset: Sequence[dict], mapper: Callable[[dict], dict], batch_size: int = 1, num_workers: int = 0
) -> DataLoader:
    """Builds the test loader: this rank's contiguous shard, in order, each item a list of mapped dicts.

    Args:
        dataset: list of dataset dicts.
        mapper: callable mapping a dataset dict to a model input dict.
        batch_size: images per batch on this rank.
        num_workers: DataLoader worker processes.

    Returns:
        a ``torch.utils.data.DataLoader`` whose ``len()`` is this rank's number of batches.
    """
    dicts = _as_dicts(dataset)
    return DataLoader(
        MapDataset(dicts, mapper),
        sampler=InferenceSampler(len(dicts)),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=trivial_batch_collator,
    )
