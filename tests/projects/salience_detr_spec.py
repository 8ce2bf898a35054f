"""Builds Salience DETR LazyConfigs for the tests: the tiny parity model from a fixture's ``spec.json``."""

import os

from core.lazy import LazyConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL_CONFIG = os.path.join(ROOT, "projects", "salience_detr", "configs", "models", "salience_detr_r50.py")
RESNET_STAGE_CHANNELS = {
    "resnet18": {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512},
    "resnet50": {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048},
}


def r50_model_config():
    """``model`` of the official ResNet-50 4-scale configuration (no pretrained backbone weights)."""
    model = LazyConfig.load(MODEL_CONFIG).model
    model.backbone.weights = None
    return model


def model_config_from_spec(spec: dict):
    """The ResNet-50 model config edited to the hyper-parameters of a parity ``spec.json``."""
    model = r50_model_config()
    model.num_classes = spec["num_classes"]
    model.backbone.name = spec["backbone"]
    model.backbone.out_features = list(spec["backbone_return_layers"])
    model.backbone.norm = "FrozenBN" if spec["backbone_frozen_bn"] else "BN"
    model.neck.in_channels = [RESNET_STAGE_CHANNELS[spec["backbone"]][s] for s in spec["backbone_return_layers"]]
    model.position_embedding.num_pos_feats = spec["embed_dim"] // 2
    model.position_embedding.temperature = spec["position_embedding"]["temperature"]
    model.position_embedding.normalize = spec["position_embedding"]["normalize"]
    model.position_embedding.offset = spec["position_embedding"]["offset"]
    model.pixel_mean = list(spec["pixel_mean"])
    model.pixel_std = list(spec["pixel_std"])
    model.num_detections = spec["postprocess_topk"]
    model.denoising.denoising_nums = spec["denoising_nums"]
    _edit_transformer(model.transformer, spec)
    _edit_losses(model, spec)
    return model


def _edit_transformer(transformer, spec: dict) -> None:
    transformer.embed_dim = spec["embed_dim"]
    transformer.num_feature_levels = spec["num_feature_levels"]
    transformer.num_queries = spec["num_queries"]
    transformer.level_filter_ratio = list(spec["level_filter_ratio"])
    transformer.layer_filter_ratio = list(spec["layer_filter_ratio"])
    for layer in (transformer.encoder.layer, transformer.decoder.layer):
        layer.embed_dim = spec["embed_dim"]
        layer.num_heads = spec["num_heads"]
        layer.d_ffn = spec["d_ffn"]
        layer.num_levels = spec["num_feature_levels"]
        layer.num_points = spec["n_points"]
    transformer.encoder.layer.topk_sa = spec["topk_sa"]
    transformer.encoder.num_layers = spec["enc_layers"]
    transformer.decoder.num_layers = spec["dec_layers"]
    transformer.encoder.background_embedding.num_embeddings = spec["max_num_embedding"]
    transformer.encoder.background_embedding.embed_dim = spec["embed_dim"]
    fusion = spec["token_fusion"]
    transformer.memory_fusion.groups = fusion["groups"]
    transformer.memory_fusion.norm = fusion["norm"]
    transformer.memory_fusion.activation = fusion["activation"]
    removal = spec["redundancy_removal"]
    if removal["candidates"].replace(" ", "") != "4xnum_queries":
        raise ValueError(f"unsupported redundancy_removal.candidates {removal['candidates']!r}")
    transformer.query_selector.candidate_factor = 4
    transformer.query_selector.iou_threshold = removal["iou_threshold"]


def _edit_losses(model, spec: dict) -> None:
    matcher = spec["matcher"]
    model.criterion.matcher.cost_class = matcher["cost_class"]
    model.criterion.matcher.cost_bbox = matcher["cost_bbox"]
    model.criterion.matcher.cost_giou = matcher["cost_giou"]
    model.criterion.matcher.focal_alpha = matcher["alpha"]
    model.criterion.matcher.focal_gamma = matcher["gamma"]
    model.criterion.weight_dict.extra_weights = {"loss_salience": spec["salience_loss_weight"]}
