"""Datasets, their registration, mappers and loaders: the public names of every module of the package."""

from . import build, builtin, catalog, coco, mapper, preflight, samplers, synthetic, transforms, yolo
from .build import *  # noqa: F403
from .builtin import *  # noqa: F403  (importing it registers the built-in datasets)
from .catalog import *  # noqa: F403
from .coco import *  # noqa: F403
from .mapper import *  # noqa: F403
from .preflight import *  # noqa: F403
from .samplers import *  # noqa: F403
from .synthetic import *  # noqa: F403
from .transforms import *  # noqa: F403
from .yolo import *  # noqa: F403

_MODULES = (build, builtin, catalog, coco, mapper, preflight, samplers, synthetic, transforms, yolo)
__all__ = [name for module in _MODULES for name in module.__all__]
_CLASHES = sorted({name for name in __all__ if __all__.count(name) > 1})
if _CLASHES:  # pragma: no cover - a guard for whoever adds a name
    raise ImportError(f"two modules of data export the same names: {_CLASHES}")
