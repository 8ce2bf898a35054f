"""The recorded official backbone keys (``tests/fixtures/official_backbone_keys.json``) and their conversion onto a
config's backbone, shared by the Salience DETR and Relation DETR backbone tests."""

import json
import os

import torch

from core.lazy import LazyConfig, instantiate
from scripts.convert_checkpoint import convert_state_dict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "official_backbone_keys.json")


def load_official_keys() -> dict:
    """``{entry: {key: shape}}`` of the fixture."""
    with open(FIXTURE) as f:
        return json.load(f)


def config_with_91_classes(path: str):
    """A COCO config as the official checkpoints are: 91 classes, no pretrained backbone download."""
    cfg = LazyConfig.load(path)
    cfg.model.num_classes = 91
    cfg.model.backbone.weights = None
    return cfg


def convert_backbone_keys(cfg, keys: dict, model: str) -> tuple[torch.nn.Module, dict, dict]:
    """``(backbone on the meta device, its keys and shapes, the converted official keys and shapes)``."""
    with torch.device("meta"):
        backbone = instantiate(cfg.model.backbone)
    ours = {f"backbone.{k}": tuple(v.shape) for k, v in backbone.state_dict().items()}
    official = {k: torch.empty(shape, device="meta") for k, shape in keys.items()}
    converted = convert_state_dict(official, model, reference_keys=ours)
    return backbone, ours, {k: tuple(v.shape) for k, v in converted.items()}
