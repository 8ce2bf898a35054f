"""Salience DETR's encoder with LP-DETR's decoder (``models/salience_lp_detr_r50.py``), ResNet-50, 4 scales, COCO
2017, 12 epochs, with the recipe both papers share (``configs/common/recipes/detr_coco_12ep.py``)."""

from ....configs.common.recipes.detr_coco_12ep import dataloader, lr_multiplier, optimizer, train
from .models.salience_lp_detr_r50 import model

train.output_dir = "./output/salience_lp_detr_r50_4scale_12ep"
