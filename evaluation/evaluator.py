"""Evaluator interface and the inference loop, detectron2-style.

An evaluator sees the model's inputs and outputs batch by batch (``process``)
and turns what it saw into metrics at the end (``evaluate``).
:func:`inference_on_dataset` runs a model over a data loader, feeds an
evaluator and measures the time spent in total and in the model's forward.
"""

from __future__ import annotations

import datetime
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from core import comm

__all__ = [
    "DatasetEvaluator",
    "DatasetEvaluators",
    "inference_context",
    "inference_on_dataset",
    "last_inference_times",
]

logger = logging.getLogger(__name__)

_MAX_WARMUP_ITERS = 5


class DatasetEvaluator:
    """Base class of evaluators: ``reset``, then ``process`` every batch, then ``evaluate``.

    ``evaluate`` is called on every rank; in a distributed run an evaluator
    typically gathers what all ranks processed and returns the metrics on the
    main process only (``None`` or ``{}`` elsewhere).
    """

    def reset(self) -> None:
        """Prepares for a new round of evaluation; called before the first ``process``."""

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """Records one batch.

        Args:
            inputs: the model's inputs, one dict per image.
            outputs: the model's outputs, one dict per image, same order as ``inputs``.
        """

    def evaluate(self) -> dict | None:
        """Returns the metrics of everything processed since ``reset``.

        Returns:
            ``{task: {metric: value}}`` (values are floats), or ``None``.
        """
        return None


class DatasetEvaluators(DatasetEvaluator):
    """Runs several evaluators as one; their result dicts are merged.

    Args:
        evaluators: the evaluators, called in order.

    Raises:
        ValueError: from ``evaluate`` if two evaluators report the same task key.
    """

    def __init__(self, evaluators: Iterable[DatasetEvaluator]) -> None:
        super().__init__()
        self._evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> OrderedDict:
        results = OrderedDict()
        for evaluator in self._evaluators:
            result = evaluator.evaluate()
            if not comm.is_main_process() or result is None:
                continue
            for key, value in result.items():
                if key in results:
                    raise ValueError(
                        f"Two evaluators returned results for the same key '{key}' "
                        f"(second one: {type(evaluator).__name__})"
                    )
                results[key] = value
        return results


@contextmanager
def inference_context(model: nn.Module):
    """Puts ``model`` in eval mode for the ``with`` block, then restores its training mode."""
    training_mode = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training_mode)


@dataclass
class InferenceTimes:
    """Times measured by one :func:`inference_on_dataset` call on this process.

    ``total_s`` and ``model_s`` cover every iteration; the per-image averages
    leave out the first ``num_warmup_iters`` iterations (their images are
    counted in ``num_warmup_images``), unless no iteration is left after them.
    """

    num_devices: int = 1
    num_warmup_iters: int = 0
    num_images: int = 0
    num_warmup_images: int = 0
    total_s: float = 0.0
    model_s: float = 0.0
    warmup_total_s: float = 0.0
    warmup_model_s: float = 0.0

    def _steady(self, seconds: float, warmup_seconds: float) -> float:
        images = self.num_images - self.num_warmup_images
        if images > 0:
            return (seconds - warmup_seconds) / images
        return seconds / self.num_images if self.num_images else float("nan")

    @property
    def total_s_per_image(self) -> float:
        return self._steady(self.total_s, self.warmup_total_s)

    @property
    def model_s_per_image(self) -> float:
        return self._steady(self.model_s, self.warmup_model_s)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "total_s": self.total_s,
            "model_s": self.model_s,
            "num_images": self.num_images,
            "model_s_per_image": self.model_s_per_image,
            "total_s_per_image": self.total_s_per_image,
            "num_warmup_images": self.num_warmup_images,
            "num_devices": self.num_devices,
        }


_LAST_TIMES: InferenceTimes | None = None


def last_inference_times() -> dict[str, float | int]:
    """Times of the most recent :func:`inference_on_dataset` call in this process.

    Returns:
        dict with ``total_s`` (wall time of the loop), ``model_s`` (summed model
        forward time), ``num_images`` (images this process ran),
        ``model_s_per_image`` and ``total_s_per_image`` (averages without the
        warm-up iterations), ``num_warmup_images`` and ``num_devices``; ``{}``
        before the first call.
    """
    return _LAST_TIMES.as_dict() if _LAST_TIMES is not None else {}


def _as_evaluator(evaluator: DatasetEvaluator | Sequence[DatasetEvaluator] | None) -> DatasetEvaluator:
    if evaluator is None:
        return DatasetEvaluators([])
    if isinstance(evaluator, DatasetEvaluator):
        return evaluator
    return DatasetEvaluators(evaluator)


def _length(data_loader: Iterable) -> int | None:
    try:
        return len(data_loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def _num_images(inputs: Any) -> int:
    return len(inputs) if isinstance(inputs, Sequence) else 1


def _cuda_synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _progress_bar(data_loader: Iterable, total: int | None) -> tqdm:
    """A tqdm bar on the main process; in a log file (no tty) it updates every 30 s."""
    interactive = sys.stderr.isatty()
    return tqdm(
        data_loader,
        total=total,
        desc="Inference",
        unit="batch",
        disable=not comm.is_main_process(),
        mininterval=0.5 if interactive else 30.0,
        dynamic_ncols=interactive,
        file=sys.stderr,
    )


def _run_loop(model, data_loader: Iterable, evaluator: DatasetEvaluator, times: InferenceTimes) -> None:
    """Feeds every batch through the model and the evaluator, filling ``times``."""
    start = time.perf_counter()
    for idx, inputs in enumerate(_progress_bar(data_loader, _length(data_loader))):
        _cuda_synchronize()
        model_start = time.perf_counter()
        outputs = model(inputs)
        _cuda_synchronize()
        times.model_s += time.perf_counter() - model_start
        evaluator.process(inputs, outputs)
        times.num_images += _num_images(inputs)
        times.total_s = time.perf_counter() - start
        if idx + 1 == times.num_warmup_iters:
            times.num_warmup_images = times.num_images
            times.warmup_total_s = times.total_s
            times.warmup_model_s = times.model_s


def _log_times(times: InferenceTimes) -> None:
    for label, seconds, per_image in (
        ("Total inference time", times.total_s, times.total_s_per_image),
        ("Total inference pure compute time", times.model_s, times.model_s_per_image),
    ):
        logger.info(
            "%s: %s (%.6f s / img per device, on %d devices)",
            label,
            datetime.timedelta(seconds=round(seconds, 3)),
            per_image,
            times.num_devices,
        )


def inference_on_dataset(
    model: nn.Module,
    data_loader: Iterable,
    evaluator: DatasetEvaluator | Sequence[DatasetEvaluator] | None,
) -> OrderedDict | dict:
    """Runs ``model`` on every batch of ``data_loader`` and evaluates the outputs.

    The model runs in eval mode (its training mode is restored afterwards) under
    ``torch.no_grad``. The first ``min(5, len(data_loader) - 1)`` iterations are
    warm-up and left out of the per-image time averages. The times are logged and
    kept for :func:`last_inference_times`.

    Args:
        model: a callable taking a batch (list of input dicts) and returning one
            output dict per image; an ``nn.Module`` is switched to eval mode.
        data_loader: an iterable of batches (a list works as well as a DataLoader).
        evaluator: an evaluator, a list of them, or ``None`` (only run and time).

    Returns:
        ``evaluator.evaluate()``, or ``{}`` when it returns ``None`` (e.g. on
        ranks other than the main one).
    """
    global _LAST_TIMES
    evaluator = _as_evaluator(evaluator)
    total = _length(data_loader)
    logger.info("Start inference on %s batches", total if total is not None else "an unknown number of")
    evaluator.reset()
    warmup = min(_MAX_WARMUP_ITERS, total - 1) if total else _MAX_WARMUP_ITERS
    times = InferenceTimes(num_devices=comm.get_world_size(), num_warmup_iters=max(warmup, 0))
    with ExitStack() as stack:
        if isinstance(model, nn.Module):
            stack.enter_context(inference_context(model))
        stack.enter_context(torch.no_grad())
        _run_loop(model, data_loader, evaluator, times)
    _LAST_TIMES = times
    _log_times(times)
    results = evaluator.evaluate()
    return {} if results is None else results
