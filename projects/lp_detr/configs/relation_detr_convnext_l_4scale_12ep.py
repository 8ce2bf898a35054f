"""Relation DETR, ConvNeXt-L, 4 scales, COCO 2017, 12 epochs: the official ``relation_detr_convnext_l_800_1333``.

The recipe of ``relation_detr_r50_4scale_12ep.py`` with the official ConvNeXt-L backbone, which is the one of
Salience DETR's ConvNeXt-L model (same class and settings; ``configs/common/backbones/convnext_l.py``):
torchvision's ConvNeXt-L, stochastic depth 0.5, stages 1-3 (strides 8, 16, 32), stem and stage 0 frozen,
torchvision's ImageNet-1k weights.

The official repository has this config but publishes no ConvNeXt-L checkpoint; a checkpoint trained with the
official code converts with ``scripts/convert_checkpoint.py --model relation_detr`` (``model.num_classes=91``).
"""

from ....configs.common.backbones.convnext_l import backbone, out_channels
from .relation_detr_r50_4scale_12ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone = backbone
model.neck.in_channels = out_channels

train.output_dir = "./output/relation_detr_convnext_l_4scale_12ep"
