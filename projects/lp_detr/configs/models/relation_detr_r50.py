"""Relation DETR, ResNet-50, 4 feature levels (the official ``relation_detr_resnet50_800_1333`` model).

900 one-to-one queries, a 1500-query hybrid branch matched to the ground truth repeated 6 times, relation-biased
decoder self-attention (4 relation features x 16 sine features -> one bias per head), an encoder that fuses the
outputs of all its layers. Derived values are interpolated from ``model.num_classes`` and ``model.transformer``.
LP-DETR (``lp_detr_r50.py``) swaps the relation embedding.
"""

from core.lazy import LazyCall as L
from modeling.backbones import ResNetBackbone
from modeling.criterion import DetrCriterion, build_weight_dict
from modeling.denoising import ContrastiveDenoising
from modeling.matcher import HungarianMatcher
from modeling.necks import ChannelMapper
from modeling.transformer import DeformableDecoderLayer, DeformableEncoderLayer
from projects.lp_detr.modeling import (
    BoxRelationEmbedding,
    LayerFusionEncoder,
    NonPersistentPositionEmbeddingSine,
    RelationDecoder,
    RelationDETR,
    RelationTransformer,
)

model = L(RelationDETR)(
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
    position_embedding=L(NonPersistentPositionEmbeddingSine)(
        num_pos_feats=128, temperature=10000, normalize=True, offset=-0.5
    ),
    transformer=L(RelationTransformer)(
        encoder=L(LayerFusionEncoder)(
            layer=L(DeformableEncoderLayer)(
                embed_dim=256, num_heads=8, d_ffn=2048, num_levels=4, num_points=4, dropout=0.0
            ),
            num_layers=6,
        ),
        decoder=L(RelationDecoder)(
            layer=L(DeformableDecoderLayer)(
                embed_dim=256, num_heads=8, d_ffn=2048, num_levels=4, num_points=4, dropout=0.0
            ),
            num_layers=6,
            num_classes="${...num_classes}",
            relation=L(BoxRelationEmbedding)(
                num_heads="${..layer.num_heads}",
                sine_dim=16,
                temperature=10000,
                scale=100,
                with_giou=False,
                chunk_size=None,
                checkpoint=False,
            ),
        ),
        num_classes="${..num_classes}",
        embed_dim=256,
        num_feature_levels=4,
        num_queries=900,
        hybrid_num_proposals=1500,
    ),
    criterion=L(DetrCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(cost_class=2, cost_bbox=5, cost_giou=2, focal_alpha=0.25, focal_gamma=2.0),
        weight_dict=L(build_weight_dict)(
            base_weights={"loss_class": 1, "loss_bbox": 5, "loss_giou": 2},
            num_decoder_layers="${...transformer.decoder.num_layers}",
            denoising=True,
            two_stage=True,
            hybrid_suffix="_hybrid",
        ),
        class_loss="varifocal_iou_aware",
        alpha=0.25,
        gamma=2.0,
    ),
    hybrid_assign=6,
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
