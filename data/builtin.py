"""Registers the project's built-in datasets (imported by ``data/__init__.py``); nothing is read until used.

- ``synthetic_train`` / ``synthetic_val``: the embedded synthetic dataset under ``$DETR_DATASETS/synthetic``,
  generated on first use (see :mod:`data.synthetic`).
- ``coco_2017_train`` / ``coco_2017_val``: ``$DETR_DATASETS/coco/{train2017,val2017}`` with
  ``annotations/instances_{train,val}2017.json``. The 80 class names and the COCO id mapping are set in the
  metadata now; loading the json checks that its categories agree.

``DETR_DATASETS`` defaults to ``<repo root>/datasets``.
"""

from __future__ import annotations

import os

from .coco import register_coco_instances
from .synthetic import register_synthetic

__all__ = ["COCO_CATEGORIES", "datasets_root", "register_all"]

# (COCO category id, name) of the 80 "thing" classes of COCO 2017 instances.
COCO_CATEGORIES = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
    (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"),
    (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"),
    (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"),
    (36, "snowboard"), (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"),
    (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"), (54, "sandwich"),
    (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"),
    (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone"),
    (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"),
    (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)  # fmt: skip

_COCO_SPLITS = {
    "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
    "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
}


def datasets_root() -> str:
    """``$DETR_DATASETS``, defaulting to ``<repo root>/datasets``."""
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.environ.get("DETR_DATASETS", os.path.join(repo_root, "datasets"))


def _coco_metadata() -> dict:
    return {
        "thing_classes": [name for _, name in COCO_CATEGORIES],
        "thing_dataset_id_to_contiguous_id": {cid: i for i, (cid, _) in enumerate(COCO_CATEGORIES)},
    }


def register_all(root: str | None = None) -> None:
    """Registers the synthetic and COCO 2017 datasets under ``root`` (default :func:`datasets_root`)."""
    root = root or datasets_root()
    register_synthetic(os.path.join(root, "synthetic"))
    for name, (image_root, json_file) in _COCO_SPLITS.items():
        register_coco_instances(name, _coco_metadata(), os.path.join(root, json_file), os.path.join(root, image_root))


register_all()
