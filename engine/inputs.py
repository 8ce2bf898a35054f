"""The command line of a trained model run on image files: its arguments, expanding the files, folders and globs
given, and naming one output per input.

Shared by the inference scripts (``scripts/demo.py``, the projects' picture tools)::

    paths = collect_inputs(["photos/", "extra/*.jpg", "one.png"])
    used: set[str] = set()
    pngs = [os.path.join(out_dir, output_name(path, used)) for path in paths]
"""

from __future__ import annotations

import argparse
import glob
import os
from collections.abc import Sequence

from data.mapper import IMAGE_EXTENSIONS

__all__ = ["IMAGE_EXTENSIONS", "add_inference_arguments", "collect_inputs", "output_name"]


def add_inference_arguments(parser: argparse.ArgumentParser, config_help: str, output_help: str) -> None:
    """Adds what every command that runs a trained model on images takes.

    ``--config-file``, ``--weights``, ``--input`` (files, folders, globs; see :func:`collect_inputs`), ``--output``,
    ``--score-threshold``, ``--device``, and the config overrides ``opts`` (``key=value``, after ``--`` when they
    follow ``--input``).

    Args:
        parser: the command's parser; add its own arguments before or after.
        config_help: help of ``--config-file`` (which configs the command expects).
        output_help: help of ``--output`` (what the command writes there).
    """
    parser.add_argument("--config-file", required=True, help=config_help)
    parser.add_argument("--weights", required=True, help="checkpoint (.pth) of the config's model")
    parser.add_argument("--input", required=True, nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--output", required=True, help=output_help)
    parser.add_argument("--score-threshold", type=float, default=0.3, help="(default: %(default)s)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="(default: %(default)s)")
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="config overrides key=value (after `--` when they follow --input)",
    )


def _folder_images(folder: str) -> list[str]:
    """The image files directly in ``folder``, sorted; a FileNotFoundError if there is none."""
    found = sorted(
        os.path.join(folder, f)
        for f in os.listdir(folder)
        if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f))
    )
    if not found:
        raise FileNotFoundError(f"folder {folder} has no image file (extensions {IMAGE_EXTENSIONS})")
    return found


def _expand(pattern: str) -> list[str]:
    """The files one command-line input stands for: a folder's images, a glob's matches, or the file itself."""
    if os.path.isdir(pattern):
        return _folder_images(pattern)
    if glob.has_magic(pattern):
        found = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        if not found:
            raise FileNotFoundError(f"glob pattern {pattern!r} matches no file")
        return found
    if os.path.isfile(pattern):
        return [pattern]
    if "=" in pattern:
        raise FileNotFoundError(
            f"input not found: {pattern} (a config override? after --input, put overrides after a `--`)"
        )
    raise FileNotFoundError(f"input not found: {pattern}")


def collect_inputs(patterns: Sequence[str]) -> list[str]:
    """Image paths of files, folders (their image files, sorted) and glob patterns, without duplicates.

    Args:
        patterns: file paths, folders or glob patterns (``**`` is recursive), in the order to process them.

    Returns:
        The paths in input order, each once.

    Raises:
        FileNotFoundError: a file does not exist, a folder has no image, or a glob matches nothing.
    """
    paths: list[str] = []
    for pattern in patterns:
        paths.extend(_expand(pattern))
    return list(dict.fromkeys(paths))


def output_name(path: str, used: set[str]) -> str:
    """A PNG file name for ``path`` (its stem), made unique among ``used`` by a ``_N`` suffix, and added to it.

    Args:
        path: the input image's path.
        used: names already given in this output folder; updated.

    Returns:
        ``"<stem>.png"``, or ``"<stem>_1.png"``, ``"<stem>_2.png"``... if that name is taken.
    """
    stem = os.path.splitext(os.path.basename(path))[0]
    name, index = f"{stem}.png", 1
    while name in used:
        name, index = f"{stem}_{index}.png", index + 1
    used.add(name)
    return name
