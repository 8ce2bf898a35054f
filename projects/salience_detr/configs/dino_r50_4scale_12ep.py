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

from core.lazy import LazyCall as L
from modeling.meta_arch import TwoStageDETR
from modeling.transformer import DeformableEncoder, DeformableEncoderLayer, TopKQuerySelector, TwoStageTransformer

from .models.salience_detr_r50 import model as _salience
from .salience_detr_r50_4scale_12ep import dataloader, lr_multiplier, optimizer, train

# Everything DINO shares with Salience DETR (backbone, neck, position embedding, decoder, matcher, denoising,
# pre-processing) is read from the Salience DETR model config; only the encoder, the query selection and the
# class loss differ.
_transformer = _salience.transformer
_criterion = _salience.criterion
_criterion.class_loss = "focal"
del _criterion.weight_dict.extra_weights  # no salience loss

model = L(TwoStageDETR)(
    num_classes=80,
    backbone=_salience.backbone,
    neck=_salience.neck,
    position_embedding=_salience.position_embedding,
    transformer=L(TwoStageTransformer)(
        encoder=L(DeformableEncoder)(
            layer=L(DeformableEncoderLayer)(
                embed_dim=256, num_heads=8, d_ffn=2048, num_levels=4, num_points=4, dropout=0.0
            ),
            num_layers=6,
        ),
        decoder=_transformer.decoder,
        num_classes="${..num_classes}",
        embed_dim=_transformer.embed_dim,
        num_feature_levels=_transformer.num_feature_levels,
        num_queries=_transformer.num_queries,
        query_selector=L(TopKQuerySelector)(num_queries="${..num_queries}"),
        memory_fusion=None,
    ),
    criterion=_criterion,
    denoising=_salience.denoising,
    pixel_mean=_salience.pixel_mean,
    pixel_std=_salience.pixel_std,
    size_divisibility=_salience.size_divisibility,
    aux_loss=_salience.aux_loss,
    num_detections=_salience.num_detections,
)

train.output_dir = "./output/dino_r50_4scale_12ep"
