"""Optimizer parameter groups and learning-rate schedules.

The schedule follows detectron2: a ``ParamScheduler`` (fvcore) maps the training
progress ``iter / max_iter`` in [0, 1) to a multiplier, and :class:`LRMultiplier`
applies it to every parameter group's base lr after each iteration.
"""

from __future__ import annotations

import copy
import logging
import math
from collections import defaultdict
from typing import Any

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    LinearParamScheduler,
    ParamScheduler,
)
from torch import nn

__all__ = [
    "get_default_optimizer_params",
    "WarmupParamScheduler",
    "LRMultiplier",
    "iterations_from_epochs",
]

logger = logging.getLogger(__name__)

_NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def _is_norm(module: nn.Module) -> bool:
    # FrozenBatchNorm-like modules (buffers only) have no parameters and never reach here;
    # any module whose class name says it is a norm layer counts, to cover custom norms.
    return isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower()


def _lr_factor(name: str, lr_factors: dict[str, float]) -> float:
    """Factor of the longest key of ``lr_factors`` contained in the parameter name (1.0 if none)."""
    matches = [k for k in lr_factors if k in name]
    return lr_factors[max(matches, key=len)] if matches else 1.0


def get_default_optimizer_params(
    model: nn.Module,
    base_lr: float | None = None,
    weight_decay: float | None = None,
    weight_decay_norm: float | None = None,
    weight_decay_bias: float | None = None,
    lr_factors: dict[str, float] | None = None,
    overrides: dict[str, dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """Parameter groups with per-parameter lr and weight decay.

    Args:
        model: the model whose trainable parameters (``requires_grad``) are grouped.
        base_lr: lr of a parameter without factor; None leaves ``lr`` to the optimizer default.
        weight_decay: default weight decay; None leaves it to the optimizer.
        weight_decay_norm: weight decay of normalisation layers' parameters.
        weight_decay_bias: weight decay of every parameter named ``*.bias``.
        lr_factors: maps a substring of the parameter name to an lr factor, e.g.
            ``{"backbone": 0.1, "sampling_offsets": 0.1}``. When several keys match a
            name, the longest (most specific) wins.
        overrides: maps a parameter's local name (e.g. ``"embedding"``) to hyper-parameters.

    Returns:
        param groups (each parameter once), merged where hyper-parameters coincide.
    """
    lr_factors = dict(lr_factors or {})
    overrides = dict(overrides or {})
    defaults: dict[str, float] = {}
    if base_lr is not None:
        defaults["lr"] = base_lr
    if weight_decay is not None:
        defaults["weight_decay"] = weight_decay
    groups: list[dict[str, Any]] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for local_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{local_name}" if module_name else local_name
            hyper = copy.copy(defaults)
            if _is_norm(module) and weight_decay_norm is not None:
                hyper["weight_decay"] = weight_decay_norm
            if local_name == "bias" and weight_decay_bias is not None:
                hyper["weight_decay"] = weight_decay_bias
            hyper.update(overrides.get(local_name, {}))
            factor = _lr_factor(full_name, lr_factors)
            if factor != 1.0:
                if "lr" not in hyper:
                    raise ValueError("lr_factors need base_lr to be set")
                hyper["lr"] = hyper["lr"] * factor
            groups.append({"params": [param], **hyper})
    return _merge_groups(groups)


def _merge_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: dict[tuple, list] = defaultdict(list)
    for g in groups:
        key = tuple(sorted((k, v) for k, v in g.items() if k != "params"))
        merged[key].extend(g["params"])
    return [{"params": params, **dict(key)} for key, params in merged.items()]


class WarmupParamScheduler(CompositeParamScheduler):
    """Prepends a warmup to a schedule.

    Warmup lasts ``warmup_length`` (a fraction of training) or ``warmup_iters`` iterations;
    the latter needs the total number of iterations, given by :class:`LRMultiplier`
    through :meth:`set_max_iter`.

    Args:
        scheduler: the schedule after warmup (its value at the warmup's end is the target).
        warmup_factor: multiplier at iteration 0, relative to that target.
        warmup_length: warmup as a fraction of training, in [0, 1).
        warmup_iters: warmup in iterations (takes precedence over ``warmup_length``).
        warmup_method: "linear" or "constant".
        rescale_interval: whether the main schedule is rescaled to the post-warmup interval.
    """

    def __init__(
        self,
        scheduler: ParamScheduler,
        warmup_factor: float = 0.001,
        warmup_length: float = 0.0,
        warmup_iters: int | None = None,
        warmup_method: str = "linear",
        rescale_interval: bool = False,
    ) -> None:
        if warmup_method not in ("linear", "constant"):
            raise ValueError(f"Unknown warmup_method '{warmup_method}' (expected 'linear' or 'constant')")
        self.main_scheduler = scheduler
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        self.rescale_interval = rescale_interval
        self._build(warmup_length)

    def _build(self, warmup_length: float) -> None:
        if not 0.0 <= warmup_length < 1.0:
            raise ValueError(f"warmup_length must be in [0, 1), got {warmup_length}")
        self.warmup_length = warmup_length
        end_value = self.main_scheduler(warmup_length)
        start_value = self.warmup_factor * self.main_scheduler(0.0)
        if self.warmup_method == "constant":
            warmup = ConstantParamScheduler(start_value)
        else:
            warmup = LinearParamScheduler(start_value, end_value)
        if warmup_length == 0.0:
            # fvcore's composite needs positive lengths; no warmup is the main schedule alone.
            super().__init__([self.main_scheduler], lengths=[1.0], interval_scaling=["fixed"])
            return
        super().__init__(
            [warmup, self.main_scheduler],
            interval_scaling=["rescaled", "rescaled" if self.rescale_interval else "fixed"],
            lengths=[warmup_length, 1 - warmup_length],
        )

    def set_max_iter(self, max_iter: int) -> None:
        """Converts ``warmup_iters`` into a fraction of ``max_iter``."""
        if self.warmup_iters is None:
            return
        if self.warmup_iters >= max_iter:
            raise ValueError(f"warmup_iters={self.warmup_iters} must be smaller than max_iter={max_iter}")
        self._build(self.warmup_iters / max_iter)


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """Sets each group's lr to ``base_lr * multiplier(iter / max_iter)``; stepped once per iteration.

    Args:
        optimizer: the optimizer whose groups' ``lr`` is the base lr.
        multiplier: a ``ParamScheduler`` over training progress in [0, 1).
        max_iter: total iterations.
        last_iter: index of the last finished iteration (-1 at the start).
    """

    def __init__(self, optimizer, multiplier: ParamScheduler, max_iter: int, last_iter: int = -1) -> None:
        if not isinstance(multiplier, ParamScheduler):
            raise TypeError(f"LRMultiplier needs an fvcore ParamScheduler, got {type(multiplier).__name__}")
        if hasattr(multiplier, "set_max_iter"):
            multiplier.set_max_iter(max_iter)
        self._multiplier = multiplier
        self._max_iter = max_iter
        super().__init__(optimizer, last_epoch=last_iter)

    def state_dict(self) -> dict:
        # The multiplier is rebuilt from the config; only the position and base lrs are state.
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def get_lr(self) -> list[float]:
        multiplier = self._multiplier(min(self.last_epoch / self._max_iter, 1.0 - 1e-9))
        return [base_lr * multiplier for base_lr in self.base_lrs]


def iterations_from_epochs(epochs: float, dataset_size: int, total_batch_size: int) -> tuple[int, int]:
    """Converts an epoch count into iterations.

    Returns:
        (max_iter, iterations per epoch), with one epoch = ceil(dataset_size / total_batch_size).
    """
    if dataset_size <= 0 or total_batch_size <= 0:
        raise ValueError(f"Cannot convert epochs with dataset_size={dataset_size}, total_batch_size={total_batch_size}")
    per_epoch = math.ceil(dataset_size / total_batch_size)
    return int(round(epochs * per_epoch)), per_epoch
