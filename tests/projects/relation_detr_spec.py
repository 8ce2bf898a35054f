"""Builds Relation DETR LazyConfigs for the tests: the tiny parity model from a fixture's ``spec.json``."""

import os

from core.lazy import LazyConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(ROOT, "projects", "lp_detr", "configs")
MODEL_CONFIG = os.path.join(CONFIG_DIR, "models", "relation_detr_r50.py")
RESNET_STAGE_CHANNELS = {
    "resnet18": {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512},
    "resnet50": {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048},
}


def r50_model_config(path: str = MODEL_CONFIG):
    """``model`` of a ResNet-50 4-scale configuration (no pretrained backbone weights)."""
    model = LazyConfig.load(path).model
    model.backbone.weights = None
    return model


def model_config_from_spec(spec: dict, path: str = MODEL_CONFIG):
    """The ResNet-50 model config at ``path`` edited to the hyper-parameters of a parity ``spec.json``."""
    model = r50_model_config(path)
    model.num_classes = spec["num_classes"]
    model.backbone.name = spec["backbone"]
    model.backbone.out_features = list(spec["backbone_return_layers"])
    model.backbone.norm = "FrozenBN" if spec["backbone_frozen_bn"] else "BN"
    model.neck.in_channels = [RESNET_STAGE_CHANNELS[spec["backbone"]][s] for s in spec["backbone_return_layers"]]
    position = spec["position_embedding"]
    model.position_embedding.num_pos_feats = spec["embed_dim"] // 2
    model.position_embedding.temperature = position["temperature"]
    model.position_embedding.normalize = position["normalize"]
    model.position_embedding.offset = position["offset"]
    model.pixel_mean = list(spec["pixel_mean"])
    model.pixel_std = list(spec["pixel_std"])
    model.num_detections = spec["postprocess_topk"]
    model.denoising.denoising_nums = spec["denoising_nums"]
    model.hybrid_assign = spec["hybrid_assign"]
    _edit_transformer(model.transformer, spec)
    _edit_matcher(model.criterion.matcher, spec["matcher"])
    return model


def _edit_transformer(transformer, spec: dict) -> None:
    transformer.embed_dim = spec["embed_dim"]
    transformer.num_feature_levels = spec["num_feature_levels"]
    transformer.num_queries = spec["num_queries"]
    transformer.hybrid_num_proposals = spec["hybrid_num_proposals"]
    for layer in (transformer.encoder.layer, transformer.decoder.layer):
        layer.embed_dim = spec["embed_dim"]
        layer.num_heads = spec["num_heads"]
        layer.d_ffn = spec["d_ffn"]
        layer.num_levels = spec["num_feature_levels"]
        layer.num_points = spec["n_points"]
    transformer.encoder.num_layers = spec["enc_layers"]
    transformer.decoder.num_layers = spec["dec_layers"]
    relation = spec["relation_embedding"]
    if relation["features"] != 4:
        raise ValueError(f"Relation DETR uses 4 relation features, spec has {relation['features']}")
    transformer.decoder.relation.sine_dim = relation["sine_dim_per_feature"]
    transformer.decoder.relation.temperature = relation["temperature"]
    transformer.decoder.relation.scale = relation["scale"]


def _edit_matcher(matcher, spec: dict) -> None:
    matcher.cost_class = spec["cost_class"]
    matcher.cost_bbox = spec["cost_bbox"]
    matcher.cost_giou = spec["cost_giou"]
    matcher.focal_alpha = spec["alpha"]
    matcher.focal_gamma = spec["gamma"]


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
