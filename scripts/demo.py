#!/usr/bin/env python
"""Batch inference on image files: one PNG with the detections per image, and a COCO-style ``results.json``.

Inputs are image files, folders (their images, sorted) or glob patterns. Each image goes through the test-time
resize of the config (``dataloader.test.mapper.augmentation``); the model returns boxes in the pixels of the
original image. Class names come from the metadata of the config's test dataset when it has them (else the
class indices, or ``--class-names``); ``category_id`` in ``results.json`` is the dataset's category id when
the metadata has the mapping, else the contiguous label.

Example (after ``make demo``)::

    python scripts/demo.py --config-file output/demo/config.yaml --weights output/demo/model_final.pth \\
        --input datasets/synthetic/val --output /tmp/demo_out --score-threshold 0.3

Config overrides (``key=value``) go last, after ``--`` when they follow ``--input``.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from data import MetadataCatalog  # noqa: E402
from data.mapper import read_image  # noqa: E402
from engine.lazy import LazyConfig, instantiate  # noqa: E402
from evaluation.visualizer import save_detection_grid  # noqa: E402

logger = logging.getLogger("demo")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

__all__ = [
    "collect_inputs",
    "dataset_metadata",
    "load_config",
    "load_model",
    "load_weights",
    "main",
    "resolve_device",
    "thresholded",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="LazyConfig (.py or the training run's config.yaml)")
    parser.add_argument("--weights", required=True, help="checkpoint (.pth) of the config's model")
    parser.add_argument("--input", required=True, nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--output", required=True, help="folder for the PNGs and results.json")
    parser.add_argument("--score-threshold", type=float, default=0.3, help="(default: %(default)s)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="(default: %(default)s)")
    parser.add_argument("--class-names", nargs="+", help="class names, replacing those of the dataset metadata")
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="config overrides key=value (after `--` when they follow --input)",
    )
    return parser.parse_args(argv)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without CUDA is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda but CUDA is not available; use --device cpu")
    return torch.device(name)


def collect_inputs(patterns: Sequence[str]) -> list[str]:
    """Image paths of files, folders (their image files, sorted) and glob patterns, without duplicates.

    Raises:
        FileNotFoundError: a file does not exist, a folder has no image, or a glob matches nothing.
    """
    paths: list[str] = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(
                os.path.join(pattern, f)
                for f in os.listdir(pattern)
                if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(pattern, f))
            )
            if not found:
                raise FileNotFoundError(f"folder {pattern} has no image file (extensions {IMAGE_EXTENSIONS})")
        elif glob.has_magic(pattern):
            found = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
            if not found:
                raise FileNotFoundError(f"glob pattern {pattern!r} matches no file")
        elif os.path.isfile(pattern):
            found = [pattern]
        elif "=" in pattern:
            raise FileNotFoundError(
                f"input not found: {pattern} (a config override? after --input, put overrides after a `--`)"
            )
        else:
            raise FileNotFoundError(f"input not found: {pattern}")
        paths.extend(found)
    return list(dict.fromkeys(paths))


def load_config(config_file: str, opts: Sequence[str] = ()) -> Any:
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file not found: {config_file}")
    cfg = LazyConfig.load(config_file)
    opts = [o for o in opts if o != "--"]
    if opts:
        cfg = LazyConfig.apply_overrides(cfg, list(opts))
    return cfg


def load_weights(model: torch.nn.Module, weights: str) -> None:
    """Loads a checkpoint that must hold every tensor of the model with its shape.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, or the checkpoint of another model (missing/unexpected/mis-shaped tensors).
    """
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"checkpoint not found: {weights}")
    try:
        checkpoint = torch.load(weights, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ValueError(f"cannot read checkpoint {weights}: {error}") from error
    if isinstance(checkpoint, dict) and "model" in checkpoint:
        state = checkpoint["model"]
    elif isinstance(checkpoint, dict) and checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state = checkpoint
    else:
        raise ValueError(f"checkpoint {weights} holds no model state dict ('model' entry or a bare state dict)")
    state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or shapes:
        details = []
        if missing:
            details.append(f"{len(missing)} model tensors missing (e.g. {missing[:3]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[:3]})")
        if shapes:
            details.append(
                f"{len(shapes)} shape mismatches (e.g. {shapes[0]}: checkpoint {tuple(state[shapes[0]].shape)} "
                f"vs model {tuple(expected[shapes[0]].shape)})"
            )
        raise ValueError(
            f"checkpoint {weights} does not fit the model {type(model).__name__} of the config: "
            + "; ".join(details)
            + ". Is it a checkpoint of another model or config (official checkpoints: convert them with "
            "scripts/convert_checkpoint.py)?"
        )
    model.load_state_dict(state, strict=True)


def load_model(cfg: Any, weights: str, device: torch.device) -> torch.nn.Module:
    """The config's model with the weights, in eval mode on ``device``."""
    if "backbone" in cfg.model and "weights" in cfg.model.backbone:
        cfg.model.backbone.weights = None  # the checkpoint holds the backbone: no pretrained download
    model = instantiate(cfg.model)
    load_weights(model, weights)
    return model.to(device).eval()


def dataset_metadata(cfg: Any, class_names: Sequence[str] | None, num_classes: int | None):
    """``(class names, contiguous label -> dataset category id)`` of the config's test dataset.

    Falls back to the label indices (as strings) and the identity mapping when the metadata lacks them.
    """
    names = None
    id_map = None
    try:
        dataset = cfg.dataloader.test.dataset.names
    except Exception:
        dataset = None
    if dataset is not None and not isinstance(dataset, str):
        dataset = list(dataset)[0] if len(dataset) else None
    if dataset:
        metadata = MetadataCatalog.get(dataset)
        names = metadata.get("thing_classes")
        mapping = metadata.get("thing_dataset_id_to_contiguous_id")
        if mapping:
            id_map = {int(v): int(k) for k, v in mapping.items()}
    if class_names:
        names = list(class_names)
    if num_classes is None:
        num_classes = len(names) if names else 0
    names = list(names) if names else []
    names += [str(i) for i in range(len(names), num_classes)]
    return names, id_map or {}


def _num_classes(model: torch.nn.Module) -> int | None:
    value = getattr(model, "num_classes", None)
    return int(value) if isinstance(value, int) else None


def thresholded(output: dict, threshold: float, class_names: Sequence[str]) -> tuple[list[dict], list[str]]:
    """Detections (``box``, ``label``, ``score`` dicts) of a model output scoring at least ``threshold``, and
    the class names padded with indices for labels beyond them."""
    keep = output["scores"] >= threshold
    detections = [
        {"box": box, "label": int(label), "score": score}
        for box, label, score in zip(
            output["boxes"][keep].cpu().tolist(),
            output["labels"][keep].cpu().tolist(),
            output["scores"][keep].cpu().tolist(),
        )
    ]
    top = max((d["label"] for d in detections), default=-1) + 1
    return detections, list(class_names) + [str(i) for i in range(len(class_names), top)]


def prepare_input(mapper: Any, path: str) -> dict:
    """The model input of an image file: test-time resize applied, ``height``/``width`` the original size."""
    record = mapper({"file_name": path})
    return {"image": record["image"], "height": record["height"], "width": record["width"], "file_name": path}


def _output_name(path: str, used: set[str]) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    name, index = f"{stem}.png", 1
    while name in used:
        name, index = f"{stem}_{index}.png", index + 1
    used.add(name)
    return name


def main(argv: list[str] | None = None) -> dict:
    """Runs the script; returns ``{"pngs": [...], "results": path of results.json}``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    paths = collect_inputs(args.input)
    cfg = load_config(args.config_file, args.opts)
    device = resolve_device(args.device)
    model = load_model(cfg, args.weights, device)
    mapper = instantiate(cfg.dataloader.test.mapper)
    class_names, id_map = dataset_metadata(cfg, args.class_names, _num_classes(model))
    os.makedirs(args.output, exist_ok=True)
    results, pngs, used = [], [], set()
    for path in tqdm(paths, desc="demo", unit="img"):
        inputs = prepare_input(mapper, path)
        with torch.no_grad():
            output = model([inputs])[0]
        detections, names = thresholded(output, args.score_threshold, class_names)
        image = read_image(path).permute(1, 2, 0).numpy()
        png = os.path.join(args.output, _output_name(path, used))
        save_detection_grid(
            [image], [detections], names, png, titles=[f"{os.path.basename(path)}: {len(detections)} detections"]
        )
        pngs.append(png)
        for d in detections:
            x0, y0, x1, y1 = d["box"]
            results.append(
                {
                    "file_name": path,
                    "category_id": id_map.get(d["label"], d["label"]),
                    "label": d["label"],
                    "class_name": names[d["label"]],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": d["score"],
                }
            )
    results_path = os.path.join(args.output, "results.json")
    with open(results_path, "w") as f:
        json.dump(results, f)
    logger.info(f"wrote {len(pngs)} PNGs and {results_path} ({len(results)} detections >= {args.score_threshold})")
    return {"pngs": pngs, "results": results_path}


if __name__ == "__main__":
    main()
