"""Relation DETR, ConvNeXt-L, 4 scales, COCO 2017, 12 epochs: the official ``relation_detr_convnext_l_800_1333``.

The recipe of ``relation_detr_r50_4scale_12ep.py`` with the official ConvNeXt-L backbone, which is the one of
Salience DETR's ConvNeXt-L model (same class and settings; ``salience_detr_convnext_l_4scale_12ep.py``):
torchvision's ConvNeXt-L, stochastic depth 0.5, stages 1-3 (strides 8, 16, 32), stem and stage 0 frozen,
torchvision's ImageNet-1k weights.

The official repository has this config but publishes no ConvNeXt-L checkpoint; a checkpoint trained with the
official code converts with ``scripts/convert_checkpoint.py --model relation_detr`` (``model.num_classes=91``).
"""

from engine.lazy import LazyCall as L
from modeling.backbones import ConvNeXtBackbone

from .relation_detr_r50_4scale_12ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.backbone = L(ConvNeXtBackbone)(
    dims=(192, 384, 768, 1536),
    depths=(3, 3, 27, 3),
    drop_path_rate=0.5,
    out_indices=(1, 2, 3),
    freeze_at=2,
    weights="https://download.pytorch.org/models/convnext_large-ea097f82.pth",
)
model.neck.in_channels = (384, 768, 1536)

train.output_dir = "./output/relation_detr_convnext_l_4scale_12ep"
