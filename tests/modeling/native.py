"""Test helper for the C++ CPU kernels (``modeling/layers/native_kernels.py``)."""

import pytest

from modeling.layers import native_kernels
from modeling.layers.ms_deform_attn import NATIVE_KERNEL, native_sampling_available


def require_native_sampling(build: bool = True) -> None:
    """Skips the test where no C++ kernel can be built by design (no compiler, or ``DETR_NATIVE_KERNELS=0``);
    with ``build``, builds the kernel and fails the test where a compiler exists but the build does not work, so
    that CI notices a broken kernel."""
    if not native_kernels.native_kernels_enabled() or native_kernels._find_compiler() is None:
        pytest.skip("no C++ compiler here, or DETR_NATIVE_KERNELS=0: the native kernels are off")
    if build:
        assert native_sampling_available(), native_kernels.native_unavailable_reason(NATIVE_KERNEL)
