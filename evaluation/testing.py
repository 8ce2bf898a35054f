"""Helpers to print, flatten and check evaluation results."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["print_csv_format", "flatten_results_dict", "verify_results"]

logger = logging.getLogger(__name__)


def print_csv_format(results: Mapping[str, Any]) -> None:
    """Logs the main metrics of each task as comma-separated lines, easy to paste into a spreadsheet.

    Per-class entries (keys containing ``-``, e.g. ``AP-person``) are left out.

    Args:
        results: ``{task: {metric: value}}``, as returned by an evaluator; a
            task whose value is not a mapping is logged as ``task=value``.
    """
    for task, res in results.items():
        if not isinstance(res, Mapping):
            logger.info("copypaste: %s=%s", task, res)
            continue
        main = [(k, v) for k, v in res.items() if "-" not in k]
        logger.info("copypaste: Task: %s", task)
        logger.info("copypaste: %s", ",".join(k for k, _ in main))
        logger.info("copypaste: %s", ",".join(f"{v:.4f}" for _, v in main))


def flatten_results_dict(results: Mapping[str, Any]) -> dict[str, Any]:
    """Flattens nested mappings, joining keys with ``/``.

    Example:
        ``{"bbox": {"AP": 40.1}}`` -> ``{"bbox/AP": 40.1}``.
    """
    flat = {}
    for key, value in results.items():
        if isinstance(value, Mapping):
            for sub_key, sub_value in flatten_results_dict(value).items():
                flat[f"{key}/{sub_key}"] = sub_value
        else:
            flat[key] = value
    return flat


def verify_results(expected: Iterable[tuple[str, str, float, float]], results: Mapping[str, Any]) -> bool:
    """Checks results against expected values, like detectron2's ``TEST.EXPECTED_RESULTS``.

    Args:
        expected: ``(task, metric, value, tolerance)`` entries.
        results: ``{task: {metric: value}}``.

    Returns:
        True if every metric is present, finite and within tolerance; each
        failure is logged as an error.
    """
    ok = True
    for task, metric, value, tolerance in expected:
        actual = results.get(task, {}).get(metric)
        if actual is None or not math.isfinite(actual) or abs(actual - value) > tolerance:
            logger.error(
                "Result verification failed: %s/%s = %s, expected %s +- %s", task, metric, actual, value, tolerance
            )
            ok = False
    if ok:
        logger.info("Results verification passed.")
    return ok
