"""Global registries of datasets and their metadata, detectron2-style.

``DatasetCatalog`` maps a name to a zero-argument function returning a list of
dataset dicts (see DESIGN.md for the format). ``MetadataCatalog`` maps the same
name to a :class:`Metadata` holding class names, the category-id mapping, the
json file and anything else evaluators and visualisers need.
"""

from __future__ import annotations

import difflib
import logging
from collections import UserDict
from collections.abc import Callable
from typing import Any

__all__ = ["DatasetCatalog", "MetadataCatalog", "Metadata"]


def _unknown_name_error(kind: str, name: str, known) -> KeyError:
    close = difflib.get_close_matches(name, list(known), n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return KeyError(f"{kind} '{name}' is not registered.{hint} Registered: {', '.join(sorted(known)) or '(none)'}")


class _DatasetCatalog(UserDict):
    def register(self, name: str, func: Callable[[], list[dict]]) -> None:
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register('{name}', ...) needs a callable, got {type(func).__name__}")
        if name in self:
            raise KeyError(f"Dataset '{name}' is already registered")
        self[name] = func

    def get(self, name: str) -> list[dict]:  # type: ignore[override]
        try:
            func = self.data[name]
        except KeyError:
            raise _unknown_name_error("Dataset", name, self.data) from None
        return func()

    def list(self) -> list[str]:
        return list(self.keys())

    def remove(self, name: str) -> None:
        self.pop(name)


DatasetCatalog = _DatasetCatalog()


class Metadata:
    """Attribute bag for one dataset; attributes, once set, cannot be changed to another value."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        object.__setattr__(self, "name", name)
        self.set(**kwargs)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        known = [k for k in self.__dict__ if k != "name"]
        raise AttributeError(
            f"Metadata of dataset '{self.name}' has no attribute '{key}'. Available: {', '.join(known) or '(none)'}"
        )

    def __setattr__(self, key: str, value: Any) -> None:
        old = self.__dict__.get(key, _MISSING)
        if old is not _MISSING and old != value:
            raise ValueError(f"Metadata '{key}' of dataset '{self.name}' cannot be changed from {old!r} to {value!r}")
        object.__setattr__(self, key, value)

    def set(self, **kwargs: Any) -> Metadata:
        for k, v in kwargs.items():
            setattr(self, k, v)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get(key, default)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_MISSING = object()


class _MetadataCatalog(UserDict):
    def get(self, name: str) -> Metadata:  # type: ignore[override]
        if name not in self.data:
            self.data[name] = Metadata(name=name)
        return self.data[name]

    def list(self) -> list[str]:
        return list(self.keys())

    def remove(self, name: str) -> None:
        self.pop(name)


MetadataCatalog = _MetadataCatalog()

logger = logging.getLogger(__name__)
