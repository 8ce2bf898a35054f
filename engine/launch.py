"""Multi-process launching (detectron2's ``launch``): one process per GPU, or per CPU worker.

On CPU, ``num_gpus_per_machine`` is the number of processes (gloo backend); on GPU,
one process drives one device (NCCL). A job started by ``torchrun`` (which sets
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``) is joined instead of spawning.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from core import comm

__all__ = ["launch", "find_free_port", "default_backend"]

logger = logging.getLogger(__name__)
DEFAULT_TIMEOUT = timedelta(minutes=30)


def find_free_port() -> int:
    """A free TCP port on localhost (racy by nature, but fine for a local job)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def launch(
    main_func,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args: tuple = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Runs ``main_func(*args)`` in ``num_gpus_per_machine * num_machines`` processes.

    Args:
        main_func: the function every process runs.
        num_gpus_per_machine: processes on this machine (GPUs, or CPU workers without CUDA).
        num_machines: number of machines.
        machine_rank: rank of this machine.
        dist_url: rendezvous URL, e.g. ``tcp://host:port``; "auto" picks a local port
            (single machine only).
        args: arguments of ``main_func``.
        timeout: timeout of collective operations.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        _join_torchrun(main_func, args, timeout)
        return
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        main_func(*args)
        return
    if torch.cuda.is_available() and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} GPU(s) are visible")
    if dist_url is None or dist_url == "auto":
        if num_machines != 1:
            raise ValueError("dist_url='auto' only works on a single machine; give tcp://<host>:<port>")
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// rendezvous across machines needs a shared file system")
    mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
        start_method="spawn",
    )


def _distributed_worker(local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args, timeout):
    backend = default_backend()
    global_rank = machine_rank * num_per_machine + local_rank
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(
            backend=backend, init_method=dist_url, world_size=world_size, rank=global_rank, timeout=timeout
        )
    except Exception as e:
        raise RuntimeError(f"Process group initialisation failed for URL {dist_url}: {e}") from e
    _create_local_group(num_per_machine, machine_rank, world_size)
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()


def _create_local_group(num_per_machine: int, machine_rank: int, world_size: int) -> None:
    num_machines = world_size // num_per_machine
    for i in range(num_machines):
        ranks = list(range(i * num_per_machine, (i + 1) * num_per_machine))
        group = dist.new_group(ranks)
        if i == machine_rank:
            comm.set_local_process_group(group)


def _join_torchrun(main_func, args, timeout) -> None:
    backend = default_backend()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size()))
    _create_local_group(local_size, dist.get_rank() // local_size, dist.get_world_size())
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()
