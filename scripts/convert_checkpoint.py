#!/usr/bin/env python
"""Converts an official checkpoint (Salience DETR's or Relation DETR's layout) into this project's state-dict layout.

The input is ``{"model": state_dict}`` or a bare state dict; floating-point tensors are converted to float32
(official checkpoints may store fp16). Keys are renamed by the ordered rule table of the chosen model
(:mod:`modeling.conversion`); a key that no rule accounts for is an error, and so is, when a reference model is
given (``--config``), any key the model does not have or any model key the checkpoint does not provide.

Example::

    python scripts/convert_checkpoint.py --input salience_detr_r50_800_1333_coco_1x.pth \\
        --output salience_detr_r50_converted.pth --model salience_detr \\
        --config projects/salience_detr/configs/salience_detr_r50_4scale_12ep.py

The rule tables belong to the projects: ``projects/<name>/conversion.py`` defines ``CONVERSIONS`` (model name ->
``ConversionRules``), and this script collects those of every project (``salience_detr``, ``relation_detr``).
Adding a model means adding an entry there.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from modeling.conversion import ConversionRules, convert_with, load_official_checkpoint  # noqa: E402

__all__ = ["conversions", "convert_state_dict", "load_official_checkpoint", "main"]


def conversions() -> dict[str, ConversionRules]:
    """The conversion rule tables of every project (``projects/<name>/conversion.py``), by model name."""
    found: dict[str, ConversionRules] = {}
    projects = os.path.join(ROOT, "projects")
    for name in sorted(os.listdir(projects)):
        if not os.path.isfile(os.path.join(projects, name, "conversion.py")):
            continue
        for model, rules in importlib.import_module(f"projects.{name}.conversion").CONVERSIONS.items():
            if model in found:
                raise ValueError(f"two projects define conversion rules for {model!r}")
            found[model] = rules
    return found


def convert_state_dict(
    state: Mapping[str, Tensor], model: str = "salience_detr", reference_keys: Iterable[str] | None = None
) -> dict[str, Tensor]:
    """Renames an official state dict into the project's layout.

    Args:
        state: the official state dict (any floating dtype).
        model: which rule table to use (a key of :func:`conversions`).
        reference_keys: the project model's ``state_dict()`` keys; when given, the result must have exactly
            these keys.

    Returns:
        the converted state dict, floating tensors in float32.

    Raises:
        KeyError: unknown model, keys no rule accounts for, or (with ``reference_keys``) unexpected or missing
            keys; the message lists them.
        ValueError: an alias key differs from the key it aliases.
    """
    tables = conversions()
    if model not in tables:
        raise KeyError(f"no conversion rules for model {model!r}; known: {sorted(tables)}")
    return convert_with(tables[model], state, model, reference_keys)


def _reference_keys(config_path: str | None) -> list[str] | None:
    """State-dict keys of the model a LazyConfig builds (backbone weights not loaded), or None."""
    if config_path is None:
        return None
    from core.lazy import LazyConfig, instantiate

    cfg = LazyConfig.load(config_path)
    if "weights" in cfg.model.get("backbone", {}):
        cfg.model.backbone.weights = None
    return list(instantiate(cfg.model).state_dict().keys())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="official checkpoint (.pth)")
    parser.add_argument("--output", required=True, help="converted checkpoint, saved as {'model': state_dict}")
    parser.add_argument(
        "--model", default="salience_detr", choices=sorted(conversions()), help="(default: %(default)s)"
    )
    parser.add_argument("--config", default=None, help="LazyConfig of the target model, to verify every key")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    state = load_official_checkpoint(args.input)
    converted = convert_state_dict(state, args.model, _reference_keys(args.config))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    torch.save({"model": converted}, args.output)
    print(f"converted {len(state)} keys into {len(converted)} ({args.model}) -> {args.output}")


if __name__ == "__main__":
    main()
