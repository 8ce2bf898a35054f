"""What the Triton kernels need: Triton itself, CUDA tensors, or Triton's interpreter for tensors on the CPU.

Triton ships with the standard Linux torch wheel, so its kernels need no build step at install time; they compile
for the GPU at first use. With ``TRITON_INTERPRET=1`` in the environment *before the kernels are first used*,
Triton runs them on the CPU through numpy, one program at a time (slow: meant for tests on small shapes). The
interpreter has no bfloat16 arithmetic: bf16 tensors are loaded and converted to float32, which the kernels do
anyway.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch
from torch import Tensor

__all__ = [
    "interpreting",
    "require_triton_device",
    "require_triton_tensors",
    "triton_available",
    "triton_unavailable_reason",
]


@functools.cache
def triton_unavailable_reason() -> str | None:
    """Why the Triton kernels cannot run in this process (``None``: Triton is importable)."""
    if importlib.util.find_spec("triton") is None:
        return "the 'triton' package is not installed (it comes with torch's Linux wheels)"
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as error:  # a broken install: say what it was
        return f"importing triton failed ({type(error).__name__}: {error})"
    return None


def triton_available() -> bool:
    """Whether Triton can be imported here (the kernels then run on CUDA tensors, or on the CPU when
    :func:`interpreting`)."""
    return triton_unavailable_reason() is None


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "yes", "on")


def require_triton_device(kernel: str, device: torch.device | str) -> None:
    """Raises unless the Triton kernel ``kernel`` can run on ``device``: Triton importable, and a CUDA device (or
    the CPU under the interpreter). The messages say what to select instead."""
    reason = triton_unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"the {kernel} needs Triton: {reason}; select another backend")
    device = torch.device(device)
    if device.type == "cuda" or (device.type == "cpu" and interpreting()):
        return
    hint = " (on the CPU only under Triton's interpreter, TRITON_INTERPRET=1, which is for tests)"
    raise ValueError(f"the {kernel} runs on CUDA tensors{hint}, got tensors on {device}; select another backend")


def require_triton_tensors(kernel: str, *tensors: Tensor) -> None:
    """:func:`require_triton_device` for the device of ``tensors``, which must be one."""
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"the {kernel} needs all tensors on one device, got {sorted(map(str, devices))}")
    require_triton_device(kernel, devices.pop())
