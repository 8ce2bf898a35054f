"""Temporary, restorable settings of the modules of a model (kernel backends, export flags)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

__all__ = ["kernel_backends", "module_attributes", "reference_kernels", "select_kernel_backend"]


@contextlib.contextmanager
def module_attributes(
    model: nn.Module,
    attribute: str,
    value: Any | Callable[[nn.Module], Any],
    applies: Callable[[nn.Module], bool] | None = None,
) -> Iterator[list[nn.Module]]:
    """Within the ``with`` block, every module of ``model`` that has ``attribute`` (and for which ``applies`` is
    true, when given) gets ``value``, or ``value(module)`` when ``value`` is callable; the previous values are
    restored on exit.

    Yields:
        the modules changed.
    """
    modules = [m for m in model.modules() if hasattr(m, attribute) and (applies is None or applies(m))]
    previous = [getattr(m, attribute) for m in modules]
    for module in modules:
        setattr(module, attribute, value(module) if callable(value) else value)
    try:
        yield modules
    finally:
        for module, old in zip(modules, previous):
            setattr(module, attribute, old)


def reference_kernels(model: nn.Module) -> contextlib.AbstractContextManager[list[nn.Module]]:
    """Within the ``with`` block, every module with a selectable kernel (``backend`` and ``reference_backend``
    attributes: deformable attention, box relations) runs its reference backend, plain PyTorch ops that tracers
    and exporters understand."""
    return module_attributes(
        model, "backend", lambda m: m.reference_backend, applies=lambda m: hasattr(m, "reference_backend")
    )


def _has_backend(name: str) -> Callable[[nn.Module], bool]:
    return lambda m: hasattr(m, "reference_backend") and name in getattr(m, "backends", {})


def kernel_backends(model: nn.Module, name: str) -> contextlib.AbstractContextManager[list[nn.Module]]:
    """Within the ``with`` block, every module with a selectable kernel whose registry (its class attribute
    ``backends``) has a backend called ``name`` runs it (e.g. ``"triton"``: the Triton deformable attention and
    relation kernels); the others keep theirs. Yields the modules switched."""
    return module_attributes(model, "backend", name, applies=_has_backend(name))


def select_kernel_backend(model: nn.Module, name: str) -> list[nn.Module]:
    """Switches, for good, every module of ``model`` that has a kernel backend called ``name`` to it (what
    ``train.kernels`` does); returns the modules switched. Raises if no module has such a backend (a mistyped
    name), listing the names the model's modules offer."""
    switched = [m for m in model.modules() if _has_backend(name)(m)]
    if not switched:
        offered = sorted({b for m in model.modules() if hasattr(m, "reference_backend") for b in m.backends})
        raise ValueError(f"no module of the model has a kernel backend {name!r}; its modules offer {offered}")
    for module in switched:
        module.backend = name
    return switched
