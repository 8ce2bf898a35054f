"""Relation DETR, ConvNeXt-L, 4 scales, COCO 2017, 12 epochs: the official ``relation_detr_convnext_l_800_1333``.

The recipe of ``relation_detr_r50_4scale_12ep.py`` with the official ConvNeXt-L backbone, which is the one of
Salience DETR's ConvNeXt-L model (same class and settings; ``salience_detr_convnext_l_4scale_12ep.py``):
torchvision's ConvNeXt-L, stochastic depth 0.5, stages 1-3 (strides 8, 16, 32), stem and stage 0 frozen,
torchvision's ImageNet-1k weights.

The official repository has this config but publishes no ConvNeXt-L checkpoint; a checkpoint trained with the
official code converts with ``scripts/convert_checkpoint.py --model relation_detr`` (``model.num_classes=91``).
"""

from ...salience_detr.configs import salience_detr_convnext_l_4scale_12ep as _salience
from .relation_detr_r50_4scale_12ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

# The backbone and neck inputs of Salience DETR's config, read from it rather than repeated.
model.backbone = _salience.model.backbone
model.neck.in_channels = _salience.model.neck.in_channels

train.output_dir = "./output/relation_detr_convnext_l_4scale_12ep"
