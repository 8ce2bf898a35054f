#!/usr/bin/env python
"""Batch inference on image files: one PNG with the detections per image, and a COCO-style ``results.json``.

Inputs are image files, folders (their images, sorted) or glob patterns. The model runs through
:class:`engine.predictor.DefaultPredictor`: each image gets the config's test-time resize and the boxes come back in
the pixels of the original image. Class names come from ``--class-names``, else from the checkpoint (written by
``tools/train_net.py``), else from the config's test dataset; the dataset's category ids from the last two.

A file that cannot be read (missing, not an image, truncated) is skipped with a warning and listed at the end and
in ``skipped.json``; ``--strict`` stops at the first one instead.

Example (after ``make demo``)::

    python scripts/demo.py --config-file output/demo/config.yaml --weights output/demo/model_final.pth \\
        --input datasets/synthetic/val --output /tmp/demo_out --score-threshold 0.3

``--fuse`` folds the batch norms into the convolutions (and Salience DETR's RepVGG branches into one convolution)
before inference: faster, with the same detections up to float rounding.

Config overrides (``key=value``) go last, after ``--`` when they follow ``--input``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from tqdm import tqdm  # noqa: E402

from data.mapper import read_image  # noqa: E402
from engine.inputs import add_inference_arguments, collect_inputs, output_name  # noqa: E402
from engine.predictor import DefaultPredictor, Detections  # noqa: E402
from evaluation.visualizer import save_detection_grid  # noqa: E402

logger = logging.getLogger("demo")

__all__ = ["main", "parse_args", "save_detections_png"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_inference_arguments(
        parser, "LazyConfig (.py or the training run's config.yaml)", "folder for the PNGs and results.json"
    )
    parser.add_argument("--class-names", nargs="+", help="class names, replacing those of the checkpoint/dataset")
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable image (default: skip it)")
    parser.add_argument(
        "--fuse",
        action="store_true",
        help="fold the batch norms into the convolutions and merge RepVGG branches before inference: faster, the "
        "same detections up to float rounding",
    )
    parser.add_argument(
        "--amp",
        action="store_true",
        help="run the model under autocast (bfloat16 on a CPU with bf16 support, float16 on CUDA): faster, "
        "scores within about 1e-2",
    )
    return parser.parse_args(argv)


def save_detections_png(image, detections: Detections, class_names: Sequence[str], png: str, title: str) -> str:
    """Draws ``detections`` over ``image`` (uint8 ``[3, H, W]``) into ``png``."""
    boxes = [
        {"box": box, "label": label, "score": score}
        for box, label, score in zip(detections.boxes.tolist(), detections.labels.tolist(), detections.scores.tolist())
    ]
    return save_detection_grid([image.permute(1, 2, 0).numpy()], [boxes], list(class_names), png, titles=[title])


def main(argv: list[str] | None = None) -> dict:
    """Runs the script; returns ``{"pngs": [...], "results": path of results.json, "skipped": [...]}``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    paths = collect_inputs(args.input)
    predictor = DefaultPredictor.from_config(
        args.config_file,
        args.weights,
        args.opts,
        device=args.device,
        class_names=args.class_names,
        fuse=args.fuse,
        amp=args.amp,
    )
    os.makedirs(args.output, exist_ok=True)
    results, pngs, skipped, used = [], [], [], set()
    for path in tqdm(paths, desc="demo", unit="img"):
        try:
            image = read_image(path)
        except (OSError, ValueError) as error:  # missing, not an image, truncated
            if args.strict:
                raise
            logger.warning(f"skipped {path}: {error}")
            skipped.append({"file_name": path, "error": str(error)})
            continue
        detections = predictor(image).above(args.score_threshold)
        title = f"{os.path.basename(path)}: {len(detections)} detections"
        png = os.path.join(args.output, output_name(path, used))
        pngs.append(save_detections_png(image, detections, predictor.class_names, png, title))
        results.extend(detections.to_coco(file_name=path))
    results_path = os.path.join(args.output, "results.json")
    with open(results_path, "w") as f:
        json.dump(results, f)
    logger.info(f"wrote {len(pngs)} PNGs and {results_path} ({len(results)} detections >= {args.score_threshold})")
    if skipped:
        with open(os.path.join(args.output, "skipped.json"), "w") as f:
            json.dump(skipped, f, indent=1)
        listing = "\n".join(f"  {s['file_name']}: {s['error']}" for s in skipped)
        logger.warning(f"skipped {len(skipped)} of {len(paths)} images (listed in skipped.json):\n{listing}")
    return {"pngs": pngs, "results": results_path, "skipped": skipped}


if __name__ == "__main__":
    main()
