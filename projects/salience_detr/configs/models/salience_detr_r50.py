"""Salience DETR, ResNet-50, 4 feature levels (the official ``salience_detr_resnet50_800_1333`` model).

Derived values are interpolated from ``model.num_classes`` and ``model.transformer``; a smaller variant is a few
edits of this config (see ``salience_detr_r18_synthetic.py``).
"""

from core.lazy import LazyCall as L
from modeling.backbones import ResNetBackbone
from modeling.criterion import DetrCriterion, build_weight_dict
from modeling.denoising import ContrastiveDenoising
from modeling.layers import PositionEmbeddingSine
from modeling.matcher import HungarianMatcher
from modeling.necks import ChannelMapper
from modeling.transformer import DeformableDecoder, DeformableDecoderLayer
from projects.salience_detr.modeling import (
    BackgroundEmbedding,
    RedundancyRemovalSelector,
    RepVGGPluXNetwork,
    SalienceDETR,
    SalienceEncoder,
    SalienceEncoderLayer,
    SalienceLoss,
    SalienceTransformer,
)

model = L(SalienceDETR)(
    num_classes=80,
    backbone=L(ResNetBackbone)(
        name="resnet50",
        out_features=("layer2", "layer3", "layer4"),
        freeze_at=2,
        norm="FrozenBN",
        weights="https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
    ),
    neck=L(ChannelMapper)(
        in_channels=(512, 1024, 2048),
        out_channels="${..transformer.embed_dim}",
        num_outs="${..transformer.num_feature_levels}",
        kernel_size=1,
        num_groups=32,
    ),
    position_embedding=L(PositionEmbeddingSine)(num_pos_feats=128, temperature=10000, normalize=True, offset=-0.5),
    transformer=L(SalienceTransformer)(
        encoder=L(SalienceEncoder)(
            layer=L(SalienceEncoderLayer)(
                embed_dim=256, num_heads=8, d_ffn=2048, num_levels=4, num_points=4, topk_sa=300, dropout=0.0
            ),
            num_layers=6,
            background_embedding=L(BackgroundEmbedding)(num_embeddings=200, embed_dim=256, relative=False),
        ),
        decoder=L(DeformableDecoder)(
            layer=L(DeformableDecoderLayer)(
                embed_dim=256, num_heads=8, d_ffn=2048, num_levels=4, num_points=4, dropout=0.0
            ),
            num_layers=6,
            num_classes="${...num_classes}",
        ),
        num_classes="${..num_classes}",
        level_filter_ratio=(0.4, 0.8, 1.0, 1.0),
        layer_filter_ratio=(1.0, 0.8, 0.6, 0.6, 0.4, 0.2),
        embed_dim=256,
        num_feature_levels=4,
        num_queries=900,
        query_selector=L(RedundancyRemovalSelector)(
            num_queries="${..num_queries}", candidate_factor=4, iou_threshold=0.3, level_wise=True
        ),
        memory_fusion=L(RepVGGPluXNetwork)(
            channels="${..embed_dim}",
            num_levels="${..num_feature_levels}",
            groups=4,
            norm="BatchNorm2d",
            activation="SiLU",
        ),
        top_down_salience=True,
    ),
    criterion=L(DetrCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(cost_class=2, cost_bbox=5, cost_giou=2, focal_alpha=0.25, focal_gamma=2.0),
        weight_dict=L(build_weight_dict)(
            base_weights={"loss_class": 1, "loss_bbox": 5, "loss_giou": 2},
            num_decoder_layers="${...transformer.decoder.num_layers}",
            denoising=True,
            two_stage=True,
            extra_weights={"loss_salience": 2},
        ),
        class_loss="varifocal_iou_aware",
        alpha=0.25,
        gamma=2.0,
    ),
    salience_loss=L(SalienceLoss)(alpha=0.25, gamma=2.0, noise_scale=0.0),
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
)
