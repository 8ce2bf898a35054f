"""Every config of the project builds its model (random weights, no download) and runs one inference: no config rots.

The ~230M-parameter Swin-L / ConvNeXt-L / FocalNet-L models take tens of seconds each on a CPU: they run in the
slow suite (``make test-all``); the fast suite checks that their configs load and name a model.
Also: the layer dimensions are interpolated, so overriding only ``model.transformer.embed_dim`` (or the number of
feature levels) gives a consistent model that runs.
"""

import glob
import os

import pytest
import torch
from torchvision.ops import box_iou

from core.lazy import LazyConfig, instantiate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LARGE = ("swin_l", "convnext_l", "focalnet_l")


def _model_configs() -> list[str]:
    """Every config file under ``projects/*/configs`` and ``configs/`` that defines a ``model``."""
    files = glob.glob(os.path.join(ROOT, "projects", "*", "configs", "**", "*.py"), recursive=True)
    files += glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
    return sorted(os.path.relpath(f, ROOT) for f in files if "model" in LazyConfig.load(f))


CONFIGS = _model_configs()


def _infer(model_cfg, size=(96, 128)):
    if "weights" in model_cfg.get("backbone", {}):
        model_cfg.backbone.weights = None
    torch.manual_seed(0)
    model = instantiate(model_cfg).eval()
    image = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        (detections,) = model([{"image": image, "height": size[0], "width": size[1]}])
    return model, detections


def test_the_configs_are_found():
    assert len(CONFIGS) >= 20
    assert "configs/baselines/dino_r50_4scale_12ep.py" in CONFIGS
    assert "projects/salience_lp_detr/configs/salience_lp_detr_r18_synthetic.py" in CONFIGS


@pytest.mark.parametrize(
    "config",
    [pytest.param(c, marks=pytest.mark.slow) if any(n in c for n in LARGE) else c for c in CONFIGS],
)
def test_config_builds_and_infers(config):
    cfg = LazyConfig.load(os.path.join(ROOT, config))
    _, detections = _infer(cfg.model)
    assert detections["boxes"].shape[1] == 4 and torch.isfinite(detections["boxes"]).all()
    threshold = cfg.model.get("nms_iou_threshold")
    if threshold is None:
        assert detections["scores"].numel() == cfg.model.num_detections
    else:  # duplicate suppression (the synthetic configs): fewer, none overlapping another above the threshold
        assert 0 < detections["scores"].numel() <= cfg.model.num_detections
        assert box_iou(detections["boxes"], detections["boxes"]).triu(1).max() <= threshold


@pytest.mark.parametrize("config", [c for c in CONFIGS if any(n in c for n in LARGE)])
def test_large_backbone_configs_load(config):
    cfg = LazyConfig.load(os.path.join(ROOT, config))
    assert cfg.model.backbone.weights and len(cfg.model.neck.in_channels) >= 3


@pytest.mark.parametrize(
    "config, overrides",
    [
        ("projects/salience_detr/configs/salience_detr_r50_4scale_12ep.py", ["model.transformer.embed_dim=64"]),
        ("projects/lp_detr/configs/lp_detr_r50_4scale_12ep.py", ["model.transformer.embed_dim=64"]),
        ("projects/salience_lp_detr/configs/salience_lp_detr_r50_4scale_12ep.py", ["model.transformer.embed_dim=64"]),
        ("configs/baselines/dino_r50_4scale_12ep.py", ["model.transformer.num_feature_levels=5"]),
        ("projects/lp_detr/configs/relation_detr_r50_4scale_12ep.py", ["model.transformer.num_feature_levels=3"]),
        (
            "projects/salience_detr/configs/salience_detr_r50_4scale_12ep.py",
            [
                "model.transformer.num_feature_levels=3",
                "model.transformer.encoder.token_filter.level_filter_ratio=[0.4,0.8,1.0]",
            ],
        ),
    ],
)
def test_one_dimension_override_changes_the_whole_model(config, overrides):
    cfg = LazyConfig.apply_overrides(LazyConfig.load(os.path.join(ROOT, config)), overrides)
    model, detections = _infer(cfg.model)
    transformer = model.transformer
    embed_dim, levels = transformer.embed_dim, transformer.num_feature_levels
    assert model.neck.convs[-1][0].out_channels == embed_dim and len(model.neck.convs) == levels
    assert model.position_embedding.num_pos_feats * 2 == embed_dim
    attention = [m for m in model.modules() if type(m).__name__ == "MultiScaleDeformableAttention"]
    assert attention and all(m.embed_dim == embed_dim and m.num_levels == levels for m in attention)
    assert torch.isfinite(detections["scores"]).all()
