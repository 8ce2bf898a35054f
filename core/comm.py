"""Process-group helpers shared by the trainer, samplers and evaluators.

Every function works both inside and outside ``torch.distributed``: without an
initialised process group the world has one rank and collectives are identities.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

_LOCAL_PROCESS_GROUP = None


def is_dist_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist_initialized() else 0


def get_local_rank() -> int:
    """Rank of this process among the processes of its machine."""
    if not is_dist_initialized() or _LOCAL_PROCESS_GROUP is None:
        return 0
    return dist.get_rank(group=_LOCAL_PROCESS_GROUP)


def get_local_size() -> int:
    if not is_dist_initialized() or _LOCAL_PROCESS_GROUP is None:
        return 1
    return dist.get_world_size(group=_LOCAL_PROCESS_GROUP)


def set_local_process_group(group) -> None:
    global _LOCAL_PROCESS_GROUP
    _LOCAL_PROCESS_GROUP = group


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all ranks; a no-op in a single process."""
    if get_world_size() > 1:
        if dist.get_backend() == dist.Backend.NCCL:
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


@functools.lru_cache
def _cpu_group():
    """A gloo group for gathering picklable Python objects (NCCL cannot)."""
    if dist.get_backend() == "nccl":
        return dist.new_group(backend="gloo")
    return dist.group.WORLD


def all_gather(data: Any, group=None) -> list[Any]:
    """Gathers a picklable object from every rank; returns the list on every rank."""
    if get_world_size() == 1:
        return [data]
    group = group or _cpu_group()
    if dist.get_world_size(group) == 1:
        return [data]
    output = [None] * dist.get_world_size(group)
    dist.all_gather_object(output, data, group=group)
    return output


def gather(data: Any, dst: int = 0, group=None) -> list[Any]:
    """Gathers a picklable object on rank ``dst``; other ranks receive ``[]``."""
    if get_world_size() == 1:
        return [data]
    group = group or _cpu_group()
    if dist.get_world_size(group=group) == 1:
        return [data]
    if dist.get_rank(group=group) == dst:
        output = [None] * dist.get_world_size(group)
        dist.gather_object(data, output, dst=dst, group=group)
        return output
    dist.gather_object(data, None, dst=dst, group=group)
    return []


def shared_random_seed() -> int:
    """A random integer drawn on every rank and agreed on (rank 0's draw)."""
    seed = int(np.random.randint(2**31))
    return all_gather(seed)[0]
