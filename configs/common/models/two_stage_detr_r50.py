"""The shared two-stage DETR, ResNet-50, 4 scales: DINO's architecture, which every model here edits.

A deformable encoder over all tokens of 4 levels, two-stage proposals, top-900 query selection, a refining decoder
(6 + 6 layers, 256 channels, 8 heads, 4 points), contrastive denoising, Hungarian matching and a focal class loss.
Every dimension of the layers is interpolated from ``model.transformer.embed_dim`` / ``num_feature_levels`` (and the
classes from ``model.num_classes``), so changing one of them changes the whole model.
"""

from core.lazy import LazyCall as L
from modeling.criterion import DetrCriterion, build_weight_dict
from modeling.denoising import ContrastiveDenoising
from modeling.layers import PositionEmbeddingSine
from modeling.matcher import HungarianMatcher
from modeling.meta_arch import TwoStageDETR
from modeling.necks import ChannelMapper
from modeling.transformer import (
    DeformableDecoder,
    DeformableDecoderLayer,
    DeformableEncoder,
    TopKQuerySelector,
    TwoStageTransformer,
)

from ..backbones.resnet50 import backbone, out_channels
from .layers import deformable_attention, encoder_layer, ffn, query_self_attention

model = L(TwoStageDETR)(
    num_classes=80,
    backbone=backbone,
    neck=L(ChannelMapper)(
        in_channels=out_channels,
        out_channels="${..transformer.embed_dim}",
        num_outs="${..transformer.num_feature_levels}",
        kernel_size=1,
        num_groups=32,
    ),
    position_embedding=L(PositionEmbeddingSine)(
        embed_dim="${..transformer.embed_dim}", temperature=10000, normalize=True, offset=-0.5
    ),
    transformer=L(TwoStageTransformer)(
        encoder=L(DeformableEncoder)(
            layer=encoder_layer("${....embed_dim}", "${....num_feature_levels}"),
            num_layers=6,
        ),
        decoder=L(DeformableDecoder)(
            layer=L(DeformableDecoderLayer)(
                self_attn=query_self_attention("${....embed_dim}"),
                cross_attn=deformable_attention(
                    "${....embed_dim}", "${....num_feature_levels}", num_heads="${..self_attn.num_heads}"
                ),
                ffn=ffn("${....embed_dim}"),
                dropout=0.0,
            ),
            num_layers=6,
            num_classes="${..num_classes}",
        ),
        num_classes="${..num_classes}",
        embed_dim=256,
        num_feature_levels=4,
        num_queries=900,
        query_selector=L(TopKQuerySelector)(num_queries="${..num_queries}"),
        memory_fusion=None,
        branches=None,
    ),
    criterion=L(DetrCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(cost_class=2, cost_bbox=5, cost_giou=2, focal_alpha=0.25, focal_gamma=2.0),
        weight_dict=L(build_weight_dict)(
            base_weights={"loss_class": 1, "loss_bbox": 5, "loss_giou": 2},
            num_decoder_layers="${...transformer.decoder.num_layers}",
            denoising=True,
            two_stage=True,
        ),
        class_loss="focal",
        alpha=0.25,
        gamma=2.0,
    ),
    denoising=L(ContrastiveDenoising)(
        num_queries="${..transformer.num_queries}",
        num_classes="${..num_classes}",
        embed_dim="${..transformer.embed_dim}",
        denoising_nums=100,
        label_noise_prob=0.5,
        box_noise_scale=1.0,
    ),
    pixel_mean=(0.485, 0.456, 0.406),
    pixel_std=(0.229, 0.224, 0.225),
    size_divisibility=32,
    aux_loss=True,
    num_detections=300,
    nms_iou_threshold=None,  # the published models keep every top-k detection (no NMS)
    extra_losses=None,
)
