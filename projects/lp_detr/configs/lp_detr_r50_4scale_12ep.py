"""LP-DETR, ResNet-50, 4 scales, COCO 2017, 12 epochs: the Relation DETR recipe with the progressive relation model
(``models/lp_detr_r50.py``)."""

from ....configs.common.recipes.detr_coco_12ep import dataloader, lr_multiplier, optimizer, train
from .models.lp_detr_r50 import model

train.output_dir = "./output/lp_detr_r50_4scale_12ep"
