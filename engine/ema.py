"""Exponential moving average of model weights."""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["ModelEMA", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


class ModelEMA:
    """Keeps ``ema = d * ema + (1 - d) * weights`` for floating-point parameters and buffers.

    The decay ramps up as ``decay * (1 - exp(-updates / warmup))`` so that early, quickly
    changing weights are not averaged over a long, meaningless history.

    Args:
        model: the (possibly DDP-wrapped) model whose state is averaged.
        decay: the asymptotic decay.
        warmup: ramp length in updates; 0 disables the ramp.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, warmup: int = 2000) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.state = {k: v.detach().clone() for k, v in unwrap_model(model).state_dict().items()}

    def current_decay(self) -> float:
        if self.warmup <= 0:
            return self.decay
        return self.decay * (1 - math.exp(-self.updates / self.warmup))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        for k, v in unwrap_model(model).state_dict().items():
            ema = self.state[k]
            if ema.dtype.is_floating_point:
                ema.mul_(d).add_(v.detach().to(ema.dtype), alpha=1 - d)
            else:
                ema.copy_(v)

    @contextmanager
    def apply_to(self, model: nn.Module):
        """Temporarily loads the EMA weights into ``model`` (e.g. for evaluation)."""
        target = unwrap_model(model)
        backup = {k: v.detach().clone() for k, v in target.state_dict().items()}
        target.load_state_dict(self.state)
        try:
            yield model
        finally:
            target.load_state_dict(backup)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "state": self.state}

    def load_state_dict(self, state: dict) -> None:
        self.updates = state["updates"]
        for k, v in state["state"].items():
            self.state[k].copy_(v)
