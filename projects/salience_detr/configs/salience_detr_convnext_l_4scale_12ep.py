"""Salience DETR, ConvNeXt-L, 4 scales, COCO 2017, 12 epochs: the official ``salience_detr_convnext_l_800_1333``.

The recipe of ``salience_detr_r50_4scale_12ep.py`` (the official configs differ only in the backbone); the backbone
(``configs/common/backbones/convnext_l.py``) is torchvision's ConvNeXt-L, stochastic depth 0.5, returning stages 1-3
(strides 8, 16, 32), stem and stage 0 frozen. Weights: torchvision's ImageNet-1k ConvNeXt-L, as in the official
config (a local path works too).

The official COCO checkpoint (``salience_detr_convnext_l_800_1333_coco_1x.pth``, 54.2 AP) converts with
``scripts/convert_checkpoint.py --model salience_detr`` into this model with ``model.num_classes=91``.
"""

from ....configs.common.backbones.convnext_l import backbone, out_channels
from .salience_detr_r50_4scale_12ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone = backbone
model.neck.in_channels = out_channels

train.output_dir = "./output/salience_detr_convnext_l_4scale_12ep"
