"""Test helper for the Triton kernels: they run on CPU tensors only under Triton's interpreter (tests/conftest.py
turns it on where there is no CUDA)."""

import pytest

from modeling.layers.triton_support import require_triton_device


def require_triton_on(device: str = "cpu") -> None:
    """Skips the test unless the Triton kernels can run on ``device`` here (Triton importable; on the CPU, the
    interpreter on), with the kernels' own reason."""
    try:
        require_triton_device("Triton kernel", device)
    except (RuntimeError, ValueError) as error:
        pytest.skip(f"untestable here: {error}")


def require_triton_on_cpu() -> None:
    """:func:`require_triton_on` the CPU (the kernels' tests with CPU tensors)."""
    require_triton_on("cpu")
