"""Test helper for the Triton kernels: they run on CPU tensors only under Triton's interpreter (tests/conftest.py
turns it on where there is no CUDA)."""

import pytest

from modeling.layers.triton_support import interpreting, triton_unavailable_reason


def require_triton_on_cpu() -> None:
    """Skips the test unless the Triton kernels can run on CPU tensors here (Triton importable, interpreter on)."""
    reason = triton_unavailable_reason()
    if reason is not None:
        pytest.skip(f"Triton kernels untestable here: {reason}")
    if not interpreting():
        pytest.skip("TRITON_INTERPRET is off (CUDA is available): the Triton kernels are tested on the GPU")
