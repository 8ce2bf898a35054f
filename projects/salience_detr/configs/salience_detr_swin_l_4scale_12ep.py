"""Salience DETR, Swin-L (ImageNet-22k), 4 scales, COCO 2017, 12 epochs: the official ``salience_detr_swin_l_800_1333``.

The recipe of ``salience_detr_r50_4scale_12ep.py`` (the official configs differ only in the backbone); the backbone
(``configs/common/backbones/swin_l.py``) is torchvision's Swin-L, window 7, stochastic depth 0.2, returning stages
1-3 (strides 8, 16, 32), stem and stage 0 frozen. Weights: the official ImageNet-22k Swin-L in torchvision's layout
(a local path works too).

The official COCO checkpoint (``salience_detr_swin_l_800_1333_coco_1x.pth``, 56.5 AP) converts with
``scripts/convert_checkpoint.py --model salience_detr`` into this model with ``model.num_classes=91``.
"""

from ....configs.common.backbones.swin_l import backbone, out_channels
from .salience_detr_r50_4scale_12ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone = backbone
model.neck.in_channels = out_channels

train.output_dir = "./output/salience_detr_swin_l_4scale_12ep"
