"""Official Relation DETR checkpoints with large backbones: key conversion onto the Relation DETR configs.

The official Relation DETR backbones are Salience DETR's classes with the same settings; the official models differ
in which stages they use: Swin-L and ConvNeXt-L return stages 1-3 with the stem and stage 0 frozen (as in Salience
DETR), FocalNet-L returns all four stages (each LayerNorm-ed), freezes nothing and feeds a 5-level neck. The
fixture's ``relation_detr_*`` entries are the official backbones' state-dict keys and shapes (full-model prefix
``backbone.``), recorded from randomly initialised official models (``configs/relation_detr/*.py``). Numerical
equality of the converted backbones and necks with the official ones (bit-exact in float32) was measured outside the
test suite, since it needs the official code.
"""

import math
import os

import pytest
import torch

from core.lazy import instantiate
from scripts.convert_checkpoint import convert_state_dict
from tests.modeling.official_backbones import config_with_91_classes, convert_backbone_keys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(ROOT, "projects", "lp_detr", "configs")
SALIENCE_CONFIG_DIR = os.path.join(ROOT, "projects", "salience_detr", "configs")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "official_backbone_keys.json")

# fixture entry -> (our config, returned channels, strides)
CONFIGS = {
    "relation_detr_swin_l": ("relation_detr_swin_l_4scale_12ep", [384, 768, 1536], [8, 16, 32]),
    "relation_detr_convnext_l": ("relation_detr_convnext_l_4scale_12ep", [384, 768, 1536], [8, 16, 32]),
    "relation_detr_focalnet_l": ("relation_detr_focalnet_l_5scale_24ep", [192, 384, 768, 1536], [4, 8, 16, 32]),
}
# parameters of the official models (num_classes=91), counted from randomly initialised official models built by
# configs/relation_detr/relation_detr_{swin_l,convnext_l,focalnet_large_lrf_fl4_1200_2000}*.py
OFFICIAL_PARAMS = {
    "relation_detr_swin_l": 218_997_780,
    "relation_detr_convnext_l": 220_232_640,
    "relation_detr_focalnet_l": 230_098_296,
}


def _config(name, directory=CONFIG_DIR):
    return config_with_91_classes(os.path.join(directory, f"{name}.py"))


@pytest.mark.parametrize("entry", sorted(CONFIGS))
def test_official_relation_backbone_keys_convert_onto_ours_exactly(entry, official_keys):
    config, channels, strides = CONFIGS[entry]
    cfg = _config(config)
    backbone, ours, converted = convert_backbone_keys(cfg, official_keys[entry], "relation_detr")
    assert converted == ours
    assert backbone.out_channels == list(cfg.model.neck.in_channels) == channels
    assert backbone.strides == strides
    official_params = sum(math.prod(s) for k, s in official_keys[entry].items() if "relative_position_index" not in k)
    assert sum(p.numel() for p in backbone.parameters()) == official_params


def test_swin_and_convnext_are_salience_detrs_backbones(official_keys):
    """Same official key sets, and our Relation DETR / LP-DETR configs build the Salience DETR configs' backbones."""
    assert official_keys["relation_detr_swin_l"] == official_keys["swin_l"]
    assert official_keys["relation_detr_convnext_l"] == official_keys["convnext_l"]
    for name in ["swin_l", "convnext_l"]:
        salience = _config(f"salience_detr_{name}_4scale_12ep", SALIENCE_CONFIG_DIR).model
        relation = _config(f"relation_detr_{name}_4scale_12ep").model
        assert relation.backbone == salience.backbone
        assert list(relation.neck.in_channels) == list(salience.neck.in_channels)
    lp_detr = _config("lp_detr_swin_l_4scale_12ep").model
    assert lp_detr.backbone == _config("relation_detr_swin_l_4scale_12ep").model.backbone


def test_focalnet_model_uses_four_stages_and_five_levels(official_keys):
    official = official_keys["relation_detr_focalnet_l"]
    assert sorted(k for k in official if k.startswith("backbone.1.")) == [
        f"backbone.1.norm{i}.{p}" for i in range(4) for p in ("bias", "weight")
    ]
    salience_cfg = _config("salience_detr_focalnet_l_4scale_12ep", SALIENCE_CONFIG_DIR).model.backbone
    cfg = _config("relation_detr_focalnet_l_5scale_24ep")
    model = cfg.model
    assert {k: v for k, v in model.backbone.items() if k not in ("out_indices", "freeze_at")} == {
        k: v for k, v in salience_cfg.items() if k not in ("out_indices", "freeze_at")
    }
    assert list(model.backbone.out_indices) == [0, 1, 2, 3] and model.backbone.freeze_at == 0
    assert model.transformer.num_feature_levels == 5
    assert (
        model.transformer.encoder.layer.self_attn.num_levels
        == model.transformer.decoder.layer.cross_attn.num_levels
        == 5
    )
    assert model.denoising.denoising_nums == 1000
    with torch.device("meta"):
        backbone = instantiate(model.backbone)
        neck = instantiate(model.neck)
    assert all(p.requires_grad for p in backbone.parameters()) and backbone.frozen_modules == []
    assert len(neck.convs) == 5 and neck.convs[4][0].in_channels == 1536
    test_resize = cfg.dataloader.test.mapper.augmentation[0]
    assert (test_resize.short_edge_length, test_resize.max_size) == (1200, 2000)
    assert cfg.train.epochs == 24 and list(cfg.lr_multiplier.scheduler.milestones) == [20]


def test_resnet_keys_still_convert_unchanged():
    official = {
        "backbone.conv1.weight": torch.empty(64, 3, 7, 7, device="meta"),
        "backbone.layer1.0.bn1.running_mean": torch.empty(64, device="meta"),
        "backbone.layer4.2.conv3.weight": torch.empty(2048, 512, 1, 1, device="meta"),
    }
    assert list(convert_state_dict(official, "relation_detr")) == list(official)


@pytest.mark.slow
@pytest.mark.parametrize("entry", sorted(CONFIGS))
def test_relation_configs_instantiate_with_the_official_parameter_count(entry):
    model = instantiate(_config(CONFIGS[entry][0]).model)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[entry]
    assert list(model.neck.in_channels) == model.backbone.out_channels
