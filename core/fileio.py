"""File helpers: atomic writes, and json reads whose errors name the file.

Atomic writes: a crash or a full disk never leaves a half-written file under the final name. Each write goes to a
temporary file in the destination's folder, is flushed to disk, then renamed over the destination (``os.replace`` is
atomic on POSIX and Windows). The temporary file is removed on any error.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any

__all__ = ["atomic_write", "read_json", "write_json", "write_text"]


def atomic_write(path: str | os.PathLike, write: Callable[[IO], Any], mode: str = "wb") -> str:
    """Calls ``write(file)`` on a temporary file opened with ``mode``, then renames it to ``path``.

    Args:
        path: destination; its folder is created if needed.
        write: writes the content into the open file (e.g. ``lambda f: torch.save(obj, f)``).
        mode: ``"wb"`` or ``"w"`` (text, UTF-8).

    Returns:
        ``path`` as a string.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates the file readable by its owner only
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | os.PathLike, content: str | bytes) -> str:
    """Writes ``content`` (text, or bytes) to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(content), "wb" if isinstance(content, bytes) else "w")


def write_json(obj: Any, path: str | os.PathLike) -> str:
    """Writes ``obj`` as json to ``path`` atomically."""
    return atomic_write(path, lambda f: json.dump(obj, f), "w")


def read_json(path: str | os.PathLike, what: str = "json file") -> Any:
    """Reads a json file.

    Args:
        path: the file.
        what: what the file is, for the error message (``"results file"``).

    Returns:
        The decoded content.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names ``what`` and ``path``).
        ValueError: the file is not valid json (the message names ``path`` and the parser's error).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid json: {error}") from error
