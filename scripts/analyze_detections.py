"""Precision-recall curves per class and a confusion matrix of a COCO results file against a registered dataset.

    python scripts/analyze_detections.py --results OUT/coco_instances_results.json --dataset NAME \
        --output DIR [--iou 0.5] [--score 0.3]
    python scripts/analyze_detections.py --config-file OUT/config.yaml --output DIR   # the run's results and data

Writes ``DIR/precision_recall.png``, ``DIR/confusion_matrix.png`` (counts), ``DIR/confusion_matrix_normalized.png``
(rows normalised) and ``DIR/confusion_matrix.json``; see :mod:`evaluation.analysis` for the definitions.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from engine.defaults import add_dataset_arguments, dataset_from_args, results_from_args  # noqa: E402
from evaluation.analysis import (  # noqa: E402
    confusion_matrix,
    plot_confusion_matrix,
    plot_precision_recall,
    precision_recall_curves,
    save_confusion_matrix_json,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", help="coco_instances_results.json (default with --config-file: the run's)")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU threshold (one of 0.50, 0.55, ..., 0.95)")
    parser.add_argument("--score", type=float, default=0.3, help="score threshold of the confusion matrix")
    add_dataset_arguments(parser, "test")
    return parser.parse_args(argv)


def load_ground_truth(dataset: str):
    """pycocotools ``COCO`` of a registered dataset (its ``json_file``, or a conversion of its dicts)."""
    from pycocotools.coco import COCO

    from data import MetadataCatalog, convert_to_coco_json

    json_file = MetadataCatalog.get(dataset).get("json_file")
    if not json_file:
        json_file = os.path.join(tempfile.mkdtemp(prefix="analyze_"), f"{dataset}_coco_format.json")
        convert_to_coco_json(dataset, json_file)
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(json_file)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dataset, cfg = dataset_from_args(args, "test")
    with open(results_from_args(args, cfg)) as f:
        results = json.load(f)
    coco_gt = load_ground_truth(dataset)
    os.makedirs(args.output, exist_ok=True)
    recall, curves = precision_recall_curves(coco_gt, results, args.iou)
    plot_precision_recall(recall, curves, os.path.join(args.output, "precision_recall.png"), args.iou)
    matrix, labels = confusion_matrix(coco_gt, results, args.iou, args.score)
    plot_confusion_matrix(matrix, labels, os.path.join(args.output, "confusion_matrix.png"))
    plot_confusion_matrix(matrix, labels, os.path.join(args.output, "confusion_matrix_normalized.png"), True)
    save_confusion_matrix_json(os.path.join(args.output, "confusion_matrix.json"), matrix, labels, args.iou, args.score)
    print(f"wrote precision_recall.png, confusion_matrix{{,_normalized}}.png, confusion_matrix.json to {args.output}")
    width = max(len(label) for label in labels)
    print(" " * width + " | " + " ".join(f"{label[:8]:>8}" for label in labels) + "   (rows: ground truth)")
    for label, row in zip(labels, matrix):
        print(f"{label:>{width}} | " + " ".join(f"{int(v):>8}" for v in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
