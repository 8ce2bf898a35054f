"""Builds Salience DETR LazyConfigs for the tests: the tiny parity model from a fixture's ``spec.json``."""

import os

from modeling.layers import MultiScaleDeformableAttention
from modeling.transformer import QuerySelfAttention
from projects.salience_detr.modeling import SelectedTokenAttention
from tests.projects import spec_configs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL_CONFIG = os.path.join(ROOT, "projects", "salience_detr", "configs", "models", "salience_detr_r50.py")


def r50_model_config():
    """``model`` of the official ResNet-50 4-scale configuration (no pretrained backbone weights)."""
    return spec_configs.r50_model_config(MODEL_CONFIG)


def model_config_from_spec(spec: dict):
    """The ResNet-50 model config edited to the hyper-parameters of a parity ``spec.json``."""
    model = r50_model_config()
    attention = (MultiScaleDeformableAttention, QuerySelfAttention, SelectedTokenAttention)
    spec_configs.edit_shared(model, spec, attention)
    encoder = model.transformer.encoder
    encoder.token_filter.level_filter_ratio = list(spec["level_filter_ratio"])
    encoder.token_filter.layer_filter_ratio = list(spec["layer_filter_ratio"])
    encoder.layer.token_attention.topk = spec["topk_sa"]
    encoder.background_embedding.num_embeddings = spec["max_num_embedding"]
    fusion, transformer = spec["token_fusion"], model.transformer
    transformer.memory_fusion.groups = fusion["groups"]
    transformer.memory_fusion.norm = fusion["norm"]
    transformer.memory_fusion.activation = fusion["activation"]
    removal = spec["redundancy_removal"]
    if removal["candidates"].replace(" ", "") != "4xnum_queries":
        raise ValueError(f"unsupported redundancy_removal.candidates {removal['candidates']!r}")
    transformer.query_selector.candidate_factor = 4
    transformer.query_selector.iou_threshold = removal["iou_threshold"]
    model.criterion.weight_dict.extra_weights = {"loss_salience": spec["salience_loss_weight"]}
    return model
