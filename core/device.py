"""The one resolver of device names used by the tools, the scripts and the predictor."""

from __future__ import annotations

import torch

__all__ = ["autocast", "default_amp_dtype", "resolve_device"]


def default_amp_dtype(device: torch.device | str) -> torch.dtype:
    """The mixed-precision dtype of ``train.amp.enabled``: float16 on CUDA, bfloat16 elsewhere (CPU)."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.bfloat16


def autocast(device: torch.device | str, enabled: bool = True, dtype: torch.dtype | None = None) -> torch.autocast:
    """``torch.autocast`` on ``device``'s type with :func:`default_amp_dtype` (or ``dtype``); a no-op when not
    ``enabled``. The models keep what is unsafe in low precision in float32 themselves (losses, box relations)."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=dtype or default_amp_dtype(device), enabled=enabled)


def resolve_device(name: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """A torch device from ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a device.

    Args:
        name: the device name (``train.device``, a script's ``--device``).
        local_rank: the GPU of a bare ``"cuda"`` (the process's local rank in a distributed run).

    Raises:
        RuntimeError: CUDA is asked for but not available (the message says to use ``cpu``).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {str(name)!r} was asked for, but CUDA is not available; use cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device
