#!/usr/bin/env python
"""Draws the annotations of a registered dataset: one PNG with a panel per image, boxes labelled by class.

Example::

    python scripts/visualize_data.py --dataset synthetic_train --output /tmp/synthetic_train.png --num-images 8
    python scripts/visualize_data.py --config-file output/my_run/config.yaml --output /tmp/train.png  # its train data
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from data import DatasetCatalog, MetadataCatalog  # noqa: E402
from data.mapper import read_image  # noqa: E402
from engine.defaults import add_dataset_arguments, dataset_from_args  # noqa: E402
from evaluation.visualizer import save_detection_grid  # noqa: E402

logger = logging.getLogger("visualize_data")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--num-images", type=int, default=8, help="first N images (default: %(default)s)")
    parser.add_argument("--columns", type=int, default=4, help="panels per row (default: %(default)s)")
    parser.add_argument("--split", choices=("train", "test"), default="train", help="with --config-file: which data")
    add_dataset_arguments(parser, "train")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    """Runs the script; returns the path of the PNG."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    if args.num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
    dataset, _ = dataset_from_args(args, args.split)
    dataset_dicts = DatasetCatalog.get(dataset)
    if not dataset_dicts:
        raise ValueError(f"dataset {dataset} has no images")
    metadata = MetadataCatalog.get(dataset)
    records = dataset_dicts[: args.num_images]
    num_classes = 1 + max((a["category_id"] for r in records for a in r.get("annotations", [])), default=-1)
    class_names = list(metadata.get("thing_classes") or [])
    class_names += [str(i) for i in range(len(class_names), num_classes)]
    images, boxes, titles = [], [], []
    for record in records:
        images.append(read_image(record["file_name"]).permute(1, 2, 0).numpy())
        anns = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
        boxes.append(
            [{"box": [x, y, x + w, y + h], "label": a["category_id"]} for a in anns for x, y, w, h in [a["bbox"]]]
        )
        titles.append(f"image {record.get('image_id')}: {len(anns)} objects")
    path = save_detection_grid(
        images, boxes, class_names, args.output, titles=titles, columns=args.columns, show_scores=False
    )
    logger.info(f"wrote {path} ({len(images)} images of {dataset})")
    return path


if __name__ == "__main__":
    main()
