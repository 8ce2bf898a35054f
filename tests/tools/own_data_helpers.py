"""Pieces of the own-data tests: datasets unlike the built-in one, and a detector that returns the ground truth."""

from __future__ import annotations

import json
import os

import torch
from torch import nn

from data.synthetic import generate_custom_coco


def make_own_data(root: str, category_ids, image_format: str = "jpg", num_train: int = 10, num_val: int = 6):
    """A dataset in ``root`` laid out like a user's: ``train.json``, ``train/``, ``val.json``, ``val/``.

    Category ids are ``category_ids`` (names ``c<id>``), images are colour JPEG/PNG of 160-240 px, image ids
    are not 1..N. Returns ``{"train": (json, images), "val": (json, images)}``.
    """
    categories = [(int(c), f"c{c}") for c in category_ids]
    files = generate_custom_coco(root, categories, image_format, num_train, num_val, seed=3, side_range=(160, 240))
    return {split: (path, os.path.join(root, split)) for split, path in files.items()}


def own_data_opts(data: dict, num_classes="null") -> list[str]:
    """Overrides that point a config at ``make_own_data``'s files through ``dataloader.datasets``."""
    (train_json, train_images), (val_json, val_images) = data["train"], data["val"]
    return [
        f"dataloader.datasets.train.json_file={train_json}",
        f"dataloader.datasets.train.image_root={train_images}",
        f"dataloader.datasets.test.json_file={val_json}",
        f"dataloader.datasets.test.image_root={val_images}",
        f"model.num_classes={num_classes}",
    ]


class OracleDetector(nn.Module):
    """Returns the ground truth of a COCO json as its detections (score 1): a perfect detector.

    Labels are the contiguous ids of the data contract, computed here independently of the project's loader:
    the rank of the category id among the json's sorted category ids. Crowd boxes are left out.

    Args:
        json_file: the COCO json of the images it will see.
        num_classes: for the checks of ``tools/train_net.py`` (``model.num_classes``).
    """

    def __init__(self, json_file: str, num_classes: int | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.anchor = nn.Parameter(torch.zeros(1))  # something for a checkpoint to hold
        with open(json_file) as f:
            coco = json.load(f)
        rank = {cat_id: k for k, cat_id in enumerate(sorted(c["id"] for c in coco["categories"]))}
        self.truth: dict = {img["id"]: ([], []) for img in coco["images"]}
        for ann in coco["annotations"]:
            if not ann.get("iscrowd", 0):
                x, y, w, h = ann["bbox"]
                self.truth[ann["image_id"]][0].append([x, y, x + w, y + h])
                self.truth[ann["image_id"]][1].append(rank[ann["category_id"]])

    def forward(self, batched_inputs):
        outputs = []
        for item in batched_inputs:
            boxes, labels = self.truth[item["image_id"]]
            outputs.append(
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    "scores": torch.ones(len(labels)),
                    "labels": torch.tensor(labels, dtype=torch.int64),
                }
            )
        return outputs
