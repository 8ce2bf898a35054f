#!/usr/bin/env python
"""Draws the detections of a COCO results json (``coco_instances_results.json``) over a registered dataset.

Writes one PNG with a panel per image: detections above the score threshold as coloured boxes labelled with
the class name and score, the dataset's ground truth as dashed white boxes.

The dataset is a registered name (``--dataset``) or, with ``--config-file`` (a run's ``config.yaml``), the
config's test data as training saw it; ``--results`` then defaults to the run's ``coco_instances_results.json``.

Example (after ``make demo``)::

    python scripts/visualize_detections.py --config-file output/demo/config.yaml \\
        --output output/demo/detections.png --score-threshold 0.3
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from data import DatasetCatalog, MetadataCatalog  # noqa: E402
from data.mapper import read_image  # noqa: E402
from engine.defaults import add_dataset_arguments, dataset_from_args, results_from_args  # noqa: E402
from evaluation.visualizer import load_coco_results, save_detection_grid  # noqa: E402

logger = logging.getLogger("visualize_detections")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--results", help="COCO results json written by the evaluator (default with --config-file: the run's)"
    )
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--score-threshold", type=float, default=0.3, help="(default: %(default)s)")
    parser.add_argument("--num-images", type=int, default=8, help="first N images (default: %(default)s)")
    parser.add_argument("--image-ids", type=int, nargs="*", help="draw these image ids instead of the first N")
    parser.add_argument("--columns", type=int, default=4, help="panels per row (default: %(default)s)")
    parser.add_argument("--no-ground-truth", action="store_true", help="do not draw the dataset's boxes")
    add_dataset_arguments(parser, "test")
    return parser.parse_args(argv)


def _select(dataset_dicts: list[dict], image_ids: list[int] | None, num_images: int) -> list[dict]:
    if not image_ids:
        return dataset_dicts[:num_images]
    by_id = {d["image_id"]: d for d in dataset_dicts}
    unknown = [i for i in image_ids if i not in by_id]
    if unknown:
        raise ValueError(f"image ids {unknown} are not in the dataset")
    return [by_id[i] for i in image_ids]


def main(argv: list[str] | None = None) -> str:
    """Runs the script; returns the path of the PNG."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    dataset, cfg = dataset_from_args(args, "test")
    results_file = results_from_args(args, cfg)
    metadata = MetadataCatalog.get(dataset)
    results = load_coco_results(results_file, metadata.thing_dataset_id_to_contiguous_id)
    dataset_dicts = DatasetCatalog.get(dataset)
    known_ids = {d["image_id"] for d in dataset_dicts}
    foreign = sorted(set(results) - known_ids)
    if foreign:
        raise ValueError(f"{results_file} has detections for image ids not in {dataset}: {foreign[:10]}")
    selected = _select(dataset_dicts, args.image_ids, args.num_images)
    images, detections, ground_truths, titles = [], [], [], []
    for record in selected:
        images.append(read_image(record["file_name"]).permute(1, 2, 0).numpy())
        dets = [d for d in results.get(record["image_id"], []) if d["score"] >= args.score_threshold]
        detections.append(dets)
        gt = [
            {"box": [x, y, x + w, y + h], "label": a["category_id"]}
            for a in record.get("annotations", [])
            if not a.get("iscrowd", 0)
            for x, y, w, h in [a["bbox"]]
        ]
        ground_truths.append(gt)
        titles.append(f"image {record['image_id']}: {len(dets)} detections, {len(gt)} objects")
    path = save_detection_grid(
        images,
        detections,
        metadata.thing_classes,
        args.output,
        ground_truths=None if args.no_ground_truth else ground_truths,
        titles=titles,
        columns=args.columns,
    )
    logger.info(f"wrote {path} ({len(images)} images, score >= {args.score_threshold})")
    return path


if __name__ == "__main__":
    main()
