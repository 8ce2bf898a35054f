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
from collections.abc import Callable, Sequence
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
    """Attribute bag for one dataset; attributes, once set, cannot be changed to another value.

    Some attributes can be derived from the dataset's files on first use instead of being set at registration
    (:meth:`set_provider`): ``register_coco_instances`` lets the category attributes (``thing_classes``,
    ``thing_dataset_id_to_contiguous_id``) come from the json's categories, so they are right whether they are
    read before or after the dataset is loaded.
    """

    def __init__(self, name: str, **kwargs: Any) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_providers", {})
        self.set(**kwargs)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__") or key == "_providers":
            raise AttributeError(key)
        if key in self._providers:
            self._provide(key)
            return self.__dict__[key]
        known = [k for k in self._known_keys() if k != "name"]
        raise AttributeError(
            f"Metadata of dataset '{self.name}' has no attribute '{key}'. Available: {', '.join(known) or '(none)'}"
        )

    def set_provider(self, keys: Sequence[str], provider: Callable[[], dict[str, Any]]) -> Metadata:
        """Derives ``keys`` on first access with ``provider()`` (a dict holding at least those keys).

        Values already set (at registration) are kept and must agree with what the provider returns; a
        disagreement is an error naming both values.
        """
        for key in keys:
            self._providers[key] = provider
        return self

    def _provide(self, key: str) -> None:
        provider = self._providers[key]
        values = provider()
        missing = [k for k, p in self._providers.items() if p is provider and k not in values]
        if missing:
            raise KeyError(f"The metadata provider of dataset '{self.name}' returned no {missing}")
        self.set_derived(**{k: values[k] for k, p in list(self._providers.items()) if p is provider})

    def set_derived(self, source: str = "the dataset's files", **values: Any) -> Metadata:
        """Sets values derived from the dataset (their providers are dropped).

        A value already set at registration must agree; a disagreement is an error naming both values and
        ``source``.
        """
        for key, value in values.items():
            self._providers.pop(key, None)
            old = self.__dict__.get(key, _MISSING)
            if old is not _MISSING and old != value:
                raise ValueError(
                    f"{source} gives {key}={value!r}, but dataset '{self.name}' was registered with {old!r}; "
                    "register it with {} metadata to take the dataset's own values"
                )
            object.__setattr__(self, key, value)
        return self

    def _known_keys(self) -> list[str]:
        return [k for k in self.__dict__ if k != "_providers"] + [k for k in self._providers if k not in self.__dict__]

    def __setattr__(self, key: str, value: Any) -> None:
        old = self.__dict__.get(key, _MISSING)
        if old is not _MISSING and old != value:
            raise ValueError(f"Metadata '{key}' of dataset '{self.name}' cannot be changed from {old!r} to {value!r}")
        object.__setattr__(self, key, value)
        self._providers.pop(key, None)  # a value set outright needs no deriving

    def set(self, **kwargs: Any) -> Metadata:
        for k, v in kwargs.items():
            setattr(self, k, v)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self.__dict__ and key in self._providers:
            self._provide(key)
        return self.__dict__.get(key, default)

    def as_dict(self) -> dict[str, Any]:
        """Every attribute, derived ones included (this reads the dataset's files where needed)."""
        for key in list(self._providers):
            if key in self._providers:
                self._provide(key)
        return {k: v for k, v in self.__dict__.items() if k != "_providers"}


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
