"""Logging setup: console on the main process, ``log.txt`` (``log.txt.rank{r}`` on other ranks)."""

from __future__ import annotations

import functools
import logging
import os
import sys

__all__ = ["setup_logger"]

_FORMAT = "[%(asctime)s %(name)s %(levelname)s]: %(message)s"
_DATE = "%m/%d %H:%M:%S"


@functools.lru_cache  # a logger is configured once per (output, rank, name)
def setup_logger(output: str | None = None, distributed_rank: int = 0, name: str = "", abbrev: bool = True):
    """Configures the logger ``name`` ("" is the root logger, so every module's logs are captured).

    Args:
        output: a directory (the file ``log.txt`` in it) or a ``.txt``/``.log`` file path; None for console only.
        distributed_rank: only rank 0 prints to the console; each rank writes its own file.
        name: logger name.
        abbrev: unused; kept for detectron2 compatibility of call sites.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    if name:
        logger.propagate = False
    formatter = logging.Formatter(_FORMAT, datefmt=_DATE)
    if distributed_rank == 0:
        ch = logging.StreamHandler(stream=sys.stdout)
        ch.setLevel(logging.INFO)
        ch.setFormatter(formatter)
        logger.addHandler(ch)
    if output is not None:
        filename = output if output.endswith((".txt", ".log")) else os.path.join(output, "log.txt")
        if distributed_rank > 0:
            filename = f"{filename}.rank{distributed_rank}"
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
        fh = logging.FileHandler(filename, mode="a")
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(formatter)
        logger.addHandler(fh)
    return logger
