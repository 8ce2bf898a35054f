#!/usr/bin/env python
"""Converts an ultralytics YOLO detection dataset to a COCO instances json, or a COCO json to YOLO labels.

YOLO class ``k`` becomes COCO category id ``k``; the other way, class ``k`` is the ``k``-th category in sorted id
order. Polygon (segmentation) lines become the polygon's bounding box. See :mod:`data.yolo`.

Examples::

    python scripts/convert_yolo.py --images ds/images/train --classes ds/data.yaml --output ds/train.json
    python scripts/convert_yolo.py --to-yolo --json instances_val.json --output ds/labels/val

``--labels`` defaults to the ``images`` folder with its last ``images`` component replaced by ``labels``. With
``--to-yolo`` the class names are also written, one per line, to ``--classes-output`` (default
``OUTPUT/classes.txt``, which reading the labels back ignores, as labelImg's).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from core.fileio import write_json  # noqa: E402
from data.yolo import coco_dict_to_yolo, yolo_to_coco_dict  # noqa: E402

logger = logging.getLogger("convert_yolo")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--to-yolo", action="store_true", help="convert --json to YOLO label files in --output")
    parser.add_argument("--images", help="YOLO image folder (YOLO -> COCO)")
    parser.add_argument("--labels", help="YOLO label folder (default: derived from --images)")
    parser.add_argument("--classes", help="data.yaml, classes.txt or obj.names (YOLO -> COCO)")
    parser.add_argument("--json", help="COCO instances json (--to-yolo)")
    parser.add_argument("--classes-output", help="class list to write with --to-yolo (default: OUTPUT/classes.txt)")
    parser.add_argument("--workers", type=int, default=None, help="threads reading image headers")
    parser.add_argument("--output", required=True, help="COCO json to write, or the label folder with --to-yolo")
    args = parser.parse_args(argv)
    needed = ("json",) if args.to_yolo else ("images", "classes")
    missing = [f"--{k}" for k in needed if getattr(args, k) is None]
    if missing:
        parser.error(f"{' and '.join(missing)} required {'with' if args.to_yolo else 'without'} --to-yolo")
    return args


def summary(coco_dict: dict) -> str:
    """Counts of a COCO dict: images, images without objects, boxes per class (crowd boxes apart).

    Classes are listed in sorted category id order with their position, which is their YOLO class index.
    """
    names = {c["id"]: c["name"] for c in coco_dict["categories"]}
    anns = coco_dict["annotations"]
    per_class = Counter(a["category_id"] for a in anns if not a.get("iscrowd", 0))
    crowd = sum(1 for a in anns if a.get("iscrowd", 0))
    used = {a["image_id"] for a in anns}
    lines = [
        f"images: {len(coco_dict['images'])} ({sum(img['id'] not in used for img in coco_dict['images'])} empty)",
        f"boxes: {sum(per_class.values())}" + (f" (and {crowd} crowd)" if crowd else ""),
    ]
    lines += [f"  {k:>4} {name}: {per_class.get(i, 0)}" for k, (i, name) in enumerate(sorted(names.items()))]
    return "\n".join(lines)


def _to_coco(args: argparse.Namespace) -> dict:
    coco_dict = yolo_to_coco_dict(args.images, args.labels, class_names=args.classes, num_workers=args.workers)
    write_json(coco_dict, args.output)
    logger.info(f"wrote {args.output}")
    return coco_dict


def _to_yolo(args: argparse.Namespace) -> dict:
    with open(args.json) as f:
        coco_dict = json.load(f)
    classes_output = args.classes_output or os.path.join(args.output, "classes.txt")
    stems = {os.path.splitext(os.path.normpath(img["file_name"]))[0] for img in coco_dict["images"]}
    if args.classes_output is None and "classes" in stems:
        raise ValueError(f"An image of {args.json} is named 'classes'; pass --classes-output elsewhere")
    names = coco_dict_to_yolo(coco_dict, args.output)
    os.makedirs(os.path.dirname(os.path.abspath(classes_output)), exist_ok=True)
    with open(classes_output, "w") as f:
        f.write("".join(f"{name}\n" for name in names))
    logger.info(f"wrote the labels to {args.output} and the {len(names)} class names to {classes_output}")
    return coco_dict


def main(argv: list[str] | None = None) -> dict:
    """Runs the script; returns the COCO dict that was written or read."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    coco_dict = _to_yolo(args) if args.to_yolo else _to_coco(args)
    print(summary(coco_dict))
    return coco_dict


if __name__ == "__main__":
    main()
