"""Relation DETR, Swin-L (ImageNet-22k), 4 scales, COCO 2017, 12 epochs: the official ``relation_detr_swin_l_800_1333``.

The recipe of ``relation_detr_r50_4scale_12ep.py`` with the official Swin-L backbone, which is the one of Salience
DETR's Swin-L model (same class and settings; ``configs/common/backbones/swin_l.py``): torchvision's Swin-L,
window 7, stochastic depth 0.2, stages 1-3 (strides 8, 16, 32), stem and stage 0 frozen, ImageNet-22k weights.

The official COCO checkpoints (``relation_detr_swin_l_800_1333_coco_1x.pth``, 57.8 AP; ``..._coco_2x.pth``, 58.1 AP)
convert with ``scripts/convert_checkpoint.py --model relation_detr`` into this model with ``model.num_classes=91``.
"""

from ....configs.common.backbones.swin_l import backbone, out_channels
from .relation_detr_r50_4scale_12ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone = backbone
model.neck.in_channels = out_channels

train.output_dir = "./output/relation_detr_swin_l_4scale_12ep"
