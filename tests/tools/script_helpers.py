"""Shared pieces of the tests of the command-line tools: tiny synthetic detectors with random weights, PNG checks."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from core.lazy import LazyConfig, instantiate
from data import DatasetCatalog
from engine.checkpoint import DetectionCheckpointer
from tests.tools.train_net_helpers import ROOT, register_tiny

SALIENCE_CONFIG = os.path.join(ROOT, "projects", "salience_detr", "configs", "salience_detr_r18_synthetic.py")
LP_DETR_CONFIG = os.path.join(ROOT, "projects", "lp_detr", "configs", "lp_detr_r18_synthetic.py")


def tiny_model_opts(val_name: str) -> list[str]:
    """Overrides that keep the synthetic Salience DETR small and fast: 128-pixel test images, 20 detections."""
    return [
        f"dataloader.test.dataset.names={val_name}",
        "dataloader.test.mapper.augmentation.0.short_edge_length=128",
        "dataloader.test.mapper.augmentation.0.max_size=224",
        "model.num_detections=20",
    ]


def tiny_dataset(root: Path, prefix: str) -> tuple[str, str, list[dict]]:
    """``(train name, val name, val dataset dicts)`` of a tiny synthetic dataset under ``root``."""
    train_name, val_name = register_tiny(str(root), prefix)
    return train_name, val_name, DatasetCatalog.get(val_name)


def save_random_model(config: str, opts: list[str], directory: Path) -> str:
    """Saves the randomly initialised (seed 0) model of ``config`` with ``opts`` as ``directory/model.pth``."""
    torch.manual_seed(0)
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config), opts)
    model = instantiate(cfg.model)
    DetectionCheckpointer(model, str(directory), save_to_disk=True).save("model")
    return str(directory / "model.pth")


def tiny_fixtures(prefix: str) -> tuple[Callable, Callable]:
    """Module-scoped fixtures ``(tiny_data, lp_detr_weights)``, for a test module to bind under those names.

    ``tiny_data`` is :func:`tiny_dataset` in a fresh folder, registered as ``{prefix}_train`` / ``{prefix}_val``;
    ``lp_detr_weights`` is ``(weights, opts)`` of a random tiny LP-DETR (:func:`tiny_model_opts` of that split).
    """

    @pytest.fixture(scope="module")
    def tiny_data(tmp_path_factory):
        return tiny_dataset(tmp_path_factory.mktemp(prefix), prefix)

    @pytest.fixture(scope="module")
    def lp_detr_weights(tiny_data, tmp_path_factory):
        opts = tiny_model_opts(tiny_data[1])
        return save_random_model(LP_DETR_CONFIG, opts, tmp_path_factory.mktemp("lp_weights")), opts

    return tiny_data, lp_detr_weights


def png_size(path: str) -> tuple[int, int]:
    """``(width, height)`` of a PNG file, after checking that it decodes and is a PNG."""
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        return image.size


def detections_by_image(records: list[dict], image_key: str) -> dict:
    """COCO-style result records (``bbox`` xywh) grouped by ``record[image_key]``."""
    grouped = {}
    for record in records:
        grouped.setdefault(record[image_key], []).append(record)
    return grouped


def max_overlap(records: list[dict]) -> float:
    """The largest IoU between two of ``records`` (COCO xywh ``bbox``), 0 for fewer than two."""
    if len(records) < 2:
        return 0.0
    boxes = torch.tensor([r["bbox"] for r in records], dtype=torch.float64)
    boxes[:, 2:] += boxes[:, :2]
    return float(box_iou(boxes, boxes).triu(1).max())
