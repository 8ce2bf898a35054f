"""DINO, ResNet-50, 4 scales, COCO 2017, 12 epochs: the two-stage DETR core without salience filtering.

The baseline of Salience DETR's efficiency comparison (paper Table 9), assembled from the shared ``modeling/``
pieces only: ``TwoStageDETR`` with a ``TwoStageTransformer`` whose ``DeformableEncoder`` attends over *all*
tokens of the 4 levels (no token filtering, no salience supervision, no background embedding, no memory fusion),
top-900 query selection by the best class logit, 6 + 6 layers, contrastive denoising (100 groups' worth of
noised boxes) and the focal class loss of DINO.

The training recipe (optimizer, lr factors, schedule, batch, clipping, data) is that of
``salience_detr_r50_4scale_12ep.py``, imported from it, so the two rows of an efficiency table differ only in
the model.
"""

from engine.lazy import LazyCall as L
from modeling.backbones import ResNetBackbone
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
    DeformableEncoderLayer,
    TopKQuerySelector,
    TwoStageTransformer,
)

from .salience_detr_r50_4scale_12ep import dataloader, lr_multiplier, optimizer, train

model = L(TwoStageDETR)(
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
    transformer=L(TwoStageTransformer)(
        encoder=L(DeformableEncoder)(
            layer=L(DeformableEncoderLayer)(
                embed_dim=256, num_heads=8, d_ffn=2048, num_levels=4, num_points=4, dropout=0.0
            ),
            num_layers=6,
        ),
        decoder=L(DeformableDecoder)(
            layer=L(DeformableDecoderLayer)(
                embed_dim=256, num_heads=8, d_ffn=2048, num_levels=4, num_points=4, dropout=0.0
            ),
            num_layers=6,
            num_classes="${...num_classes}",
        ),
        num_classes="${..num_classes}",
        embed_dim=256,
        num_feature_levels=4,
        num_queries=900,
        query_selector=L(TopKQuerySelector)(num_queries="${..num_queries}"),
        memory_fusion=None,
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
)

train.output_dir = "./output/dino_r50_4scale_12ep"
