"""Builds Relation DETR LazyConfigs for the tests: the tiny parity model from a fixture's ``spec.json``."""

import os

from tests.projects import spec_configs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(ROOT, "projects", "lp_detr", "configs")
MODEL_CONFIG = os.path.join(CONFIG_DIR, "models", "relation_detr_r50.py")


def r50_model_config(path: str = MODEL_CONFIG):
    """``model`` of a ResNet-50 4-scale configuration (no pretrained backbone weights)."""
    return spec_configs.r50_model_config(path)


def model_config_from_spec(spec: dict, path: str = MODEL_CONFIG):
    """The ResNet-50 model config at ``path`` edited to the hyper-parameters of a parity ``spec.json``."""
    model = r50_model_config(path)
    spec_configs.edit_shared(model, spec)
    model.extra_losses.hybrid.assign = spec["hybrid_assign"]
    model.transformer.branches.hybrid.num_proposals = spec["hybrid_num_proposals"]
    relation, decoder = spec["relation_embedding"], model.transformer.decoder
    if relation["features"] != 4:
        raise ValueError(f"Relation DETR uses 4 relation features, spec has {relation['features']}")
    decoder.relation.sine_dim = relation["sine_dim_per_feature"]
    decoder.relation.temperature = relation["temperature"]
    decoder.relation.scale = relation["scale"]
    return model


def small_model_config(path: str = MODEL_CONFIG, dec_layers: int = 3):
    """A small, fast model of the config at ``path`` (ResNet-18, 64 channels, few queries) for CPU tests."""
    spec = {
        "num_classes": 5,
        "backbone": "resnet18",
        "backbone_return_layers": ["layer2", "layer3", "layer4"],
        "backbone_frozen_bn": True,
        "embed_dim": 64,
        "num_heads": 8,
        "d_ffn": 128,
        "enc_layers": 2,
        "dec_layers": dec_layers,
        "num_feature_levels": 4,
        "n_points": 2,
        "num_queries": 30,
        "hybrid_num_proposals": 40,
        "hybrid_assign": 3,
        "denoising_nums": 20,
        "relation_embedding": {"sine_dim_per_feature": 16, "temperature": 10000, "scale": 100, "features": 4},
        "position_embedding": {"temperature": 10000, "normalize": True, "offset": -0.5},
        "postprocess_topk": 50,
        "pixel_mean": [0.485, 0.456, 0.406],
        "pixel_std": [0.229, 0.224, 0.225],
        "matcher": {"cost_class": 2, "cost_bbox": 5, "cost_giou": 2, "alpha": 0.25, "gamma": 2.0},
    }
    return model_config_from_spec(spec, path)
