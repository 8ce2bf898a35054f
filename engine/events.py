"""Metric storage shared by the trainer and hooks, and the writers that publish it.

``EventStorage`` is detectron2's: a context-local store of scalar histories
(fvcore ``HistoryBuffer``) keyed by name, plus the current iteration. Writers read
it: :class:`CommonMetricPrinter` (console line with ETA), :class:`JSONWriter`
(``metrics.json``, one JSON object per line) and :class:`TensorboardXWriter`.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from collections import defaultdict
from contextlib import contextmanager, suppress

import torch
from fvcore.common.history_buffer import HistoryBuffer

__all__ = [
    "EventStorage",
    "get_event_storage",
    "EventWriter",
    "CommonMetricPrinter",
    "JSONWriter",
    "TensorboardXWriter",
]

_CURRENT_STORAGE_STACK: list[EventStorage] = []


def get_event_storage() -> EventStorage:
    """The innermost active :class:`EventStorage`; error outside ``with EventStorage()``."""
    if not _CURRENT_STORAGE_STACK:
        raise RuntimeError("get_event_storage() must be called inside a 'with EventStorage(...)' context")
    return _CURRENT_STORAGE_STACK[-1]


class EventStorage:
    """Scalar histories for one training run.

    Args:
        start_iter: iteration the storage starts counting from.
    """

    def __init__(self, start_iter: int = 0) -> None:
        self.iter = start_iter
        self._history: dict[str, HistoryBuffer] = defaultdict(HistoryBuffer)
        self._smoothing_hints: dict[str, bool] = {}
        self._latest_scalars: dict[str, tuple[float, int]] = {}

    def put_scalar(self, name: str, value, smoothing_hint: bool = True, cur_iter: int | None = None) -> None:
        """Records ``value`` for ``name`` at ``cur_iter`` (default: the current iteration).

        ``smoothing_hint`` tells writers whether a median over a window is meaningful.
        """
        cur_iter = self.iter if cur_iter is None else cur_iter
        value = float(value.detach().cpu().item() if isinstance(value, torch.Tensor) else value)
        self._history[name].update(value, cur_iter)
        self._latest_scalars[name] = (value, cur_iter)
        existing = self._smoothing_hints.get(name)
        if existing is not None and existing != smoothing_hint:
            raise ValueError(f"Scalar '{name}' was put with a different smoothing_hint before")
        self._smoothing_hints[name] = smoothing_hint

    def put_scalars(self, *, smoothing_hint: bool = True, cur_iter: int | None = None, **kwargs) -> None:
        for k, v in kwargs.items():
            self.put_scalar(k, v, smoothing_hint=smoothing_hint, cur_iter=cur_iter)

    def history(self, name: str) -> HistoryBuffer:
        if name not in self._history:
            raise KeyError(f"No history for metric '{name}'")
        return self._history[name]

    def histories(self) -> dict[str, HistoryBuffer]:
        return self._history

    def latest(self) -> dict[str, tuple[float, int]]:
        """Maps each name to its most recent ``(value, iteration)``."""
        return self._latest_scalars

    def latest_with_smoothing_hint(self, window_size: int = 20) -> dict[str, tuple[float, int]]:
        """Like :meth:`latest`, but scalars with a smoothing hint are the median of the last ``window_size``."""
        result = {}
        for k, (v, itr) in self._latest_scalars.items():
            result[k] = (self._history[k].median(window_size) if self._smoothing_hints[k] else v, itr)
        return result

    def smoothing_hints(self) -> dict[str, bool]:
        return self._smoothing_hints

    def step(self) -> None:
        self.iter += 1

    def __enter__(self) -> EventStorage:
        _CURRENT_STORAGE_STACK.append(self)
        return self

    def __exit__(self, *exc) -> None:
        assert _CURRENT_STORAGE_STACK[-1] is self
        _CURRENT_STORAGE_STACK.pop()

    @contextmanager
    def name_scope(self, prefix: str):
        """Prefixes every scalar put inside the block with ``prefix/``."""
        original = self.put_scalar

        def scoped(name, *args, **kwargs):
            original(f"{prefix.rstrip('/')}/{name}", *args, **kwargs)

        self.put_scalar = scoped  # type: ignore[method-assign]
        try:
            yield
        finally:
            self.put_scalar = original  # type: ignore[method-assign]


class EventWriter:
    """Base class of writers; ``write`` is called periodically and at the end of training."""

    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JSONWriter(EventWriter):
    """Appends one JSON object per iteration with new scalars to ``json_file`` (``metrics.json``).

    Args:
        json_file: output path (appended to, so a resumed run continues the file).
        window_size: median window for scalars with a smoothing hint.
    """

    def __init__(self, json_file: str, window_size: int = 20) -> None:
        self._file_handle = open(json_file, "a")  # noqa: SIM115 - closed in close()
        self._window_size = window_size
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        to_save: dict[int, dict[str, float]] = defaultdict(dict)
        for k, (v, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            if itr <= self._last_write:
                continue
            to_save[itr][k] = v
        if to_save:
            self._last_write = max(to_save.keys())
        for itr, scalars in sorted(to_save.items()):
            scalars["iteration"] = itr
            self._file_handle.write(json.dumps(scalars, sort_keys=True) + "\n")
        self._file_handle.flush()
        with suppress(OSError):
            os.fsync(self._file_handle.fileno())

    def close(self) -> None:
        self._file_handle.close()


class TensorboardXWriter(EventWriter):
    """Writes every new scalar to TensorBoard event files in ``log_dir``."""

    def __init__(self, log_dir: str, window_size: int = 20, **kwargs) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._window_size = window_size
        self._writer = SummaryWriter(log_dir, **kwargs)
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        new_last = self._last_write
        for k, (v, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            if itr > self._last_write:
                self._writer.add_scalar(k, v, itr)
                new_last = max(new_last, itr)
        self._last_write = new_last
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class CommonMetricPrinter(EventWriter):
    """Prints one console line per period: ETA, iteration, losses, timing, lr and memory.

    Args:
        max_iter: total iterations, used for the ETA.
        window_size: median window for losses and times.
    """

    def __init__(self, max_iter: int | None = None, window_size: int = 20) -> None:
        self.logger = logging.getLogger("engine.events")
        self._max_iter = max_iter
        self._window_size = window_size
        self._last_write: tuple[int, float] | None = None

    def _eta(self, storage: EventStorage) -> str | None:
        if self._max_iter is None:
            return None
        iteration = storage.iter
        try:
            seconds = storage.history("time").median(1000) * (self._max_iter - iteration - 1)
            storage.put_scalar("eta_seconds", seconds, smoothing_hint=False)
            return str(datetime.timedelta(seconds=int(seconds)))
        except KeyError:
            # Before 'time' is recorded (e.g. first iterations): estimate from wall clock.
            eta = None
            if self._last_write is not None:
                per_iter = (time.perf_counter() - self._last_write[1]) / max(iteration - self._last_write[0], 1)
                eta = str(datetime.timedelta(seconds=int(per_iter * (self._max_iter - iteration - 1))))
            self._last_write = (iteration, time.perf_counter())
            return eta

    def write(self) -> None:
        storage = get_event_storage()
        iteration = storage.iter
        if iteration == self._max_iter:
            return  # after training finished, nothing new to print
        histories = storage.histories()

        def avg(name):
            return histories[name].avg(self._window_size) if name in histories else None

        losses = "  ".join(
            f"{k}: {h.median(self._window_size):.4g}"
            for k, h in histories.items()
            if "loss" in k and storage.smoothing_hints().get(k, False)
        )
        parts = [f"eta: {self._eta(storage)}" if self._max_iter else "", f"iter: {iteration}", losses]
        if (t := avg("time")) is not None:
            parts.append(f"time: {t:.4f}")
        if (t := avg("data_time")) is not None:
            parts.append(f"data_time: {t:.4f}")
        if "lr" in histories:
            parts.append(f"lr: {histories['lr'].latest():.5g}")
        if torch.cuda.is_available():
            parts.append(f"max_mem: {torch.cuda.max_memory_allocated() / 1024**2:.0f}M")
        self.logger.info("  ".join(p for p in parts if p))
