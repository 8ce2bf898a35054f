"""Puts the repository root on sys.path (the project is used from its root, like detrex)."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# The Triton kernels are tested on the CPU through Triton's interpreter, which must be chosen before the kernels are
# first compiled (Triton reads TRITON_INTERPRET when it decorates them). Where CUDA is available the kernels run
# compiled on the GPU instead, and their CPU tests skip (tests/modeling/triton.py).
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
