"""LP-DETR, Swin-L (ImageNet-22k), 4 scales, COCO 2017, 12 epochs.

The recipe of ``lp_detr_r50_4scale_12ep.py`` with the Swin-L backbone of the official Relation DETR / Salience DETR
Swin-L models: window 7, stochastic depth 0.2, stages 1-3 (strides 8, 16, 32), stem and stage 0 frozen.
"""

from ....configs.common.backbones.swin_l import backbone, out_channels
from .lp_detr_r50_4scale_12ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone = backbone
model.neck.in_channels = out_channels

train.output_dir = "./output/lp_detr_swin_l_4scale_12ep"
