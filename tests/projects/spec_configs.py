"""Model configs edited to the hyper-parameters of a parity ``spec.json``: what both papers' tiny models share.

The spec describes the official model (``../shared/parity/README.md``); these edits turn a project's ResNet-50
config into it. Layer dimensions are interpolated in the configs, so the transformer's ``embed_dim`` and
``num_feature_levels`` are set once; heads, points and FFN widths are set on every module of their kind.
"""

from core.lazy import LazyConfig, iter_calls
from modeling.layers import MultiScaleDeformableAttention
from modeling.transformer import FFN, QuerySelfAttention

RESNET_STAGE_CHANNELS = {
    "resnet18": {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512},
    "resnet50": {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048},
}


def r50_model_config(path: str):
    """``model`` of a ResNet-50 4-scale model config (no pretrained backbone weights)."""
    model = LazyConfig.load(path).model
    model.backbone.weights = None
    return model


def edit_shared(model, spec: dict, attention_types=(MultiScaleDeformableAttention, QuerySelfAttention)) -> None:
    """Backbone, neck, position embedding, pixel statistics, post-processing, denoising, matcher and transformer
    dimensions of ``spec`` (``attention_types``: the modules whose ``num_heads`` the spec sets)."""
    model.num_classes = spec["num_classes"]
    model.backbone.name = spec["backbone"]
    model.backbone.out_features = list(spec["backbone_return_layers"])
    model.backbone.norm = "FrozenBN" if spec["backbone_frozen_bn"] else "BN"
    model.neck.in_channels = [RESNET_STAGE_CHANNELS[spec["backbone"]][s] for s in spec["backbone_return_layers"]]
    position = spec["position_embedding"]
    model.position_embedding.temperature = position["temperature"]
    model.position_embedding.normalize = position["normalize"]
    model.position_embedding.offset = position["offset"]
    model.pixel_mean = list(spec["pixel_mean"])
    model.pixel_std = list(spec["pixel_std"])
    model.num_detections = spec["postprocess_topk"]
    model.denoising.denoising_nums = spec["denoising_nums"]
    matcher, costs = model.criterion.matcher, spec["matcher"]
    matcher.cost_class, matcher.cost_bbox, matcher.cost_giou = (
        costs["cost_class"],
        costs["cost_bbox"],
        costs["cost_giou"],
    )
    matcher.focal_alpha, matcher.focal_gamma = costs["alpha"], costs["gamma"]
    transformer = model.transformer
    transformer.embed_dim = spec["embed_dim"]
    transformer.num_feature_levels = spec["num_feature_levels"]
    transformer.num_queries = spec["num_queries"]
    transformer.encoder.num_layers = spec["enc_layers"]
    transformer.decoder.num_layers = spec["dec_layers"]
    for kind in attention_types:
        for node in iter_calls(transformer, kind):
            node.num_heads = spec["num_heads"]
    for node in iter_calls(transformer, MultiScaleDeformableAttention):
        node.num_points = spec["n_points"]
    for node in iter_calls(transformer, FFN):
        node.d_ffn = spec["d_ffn"]
