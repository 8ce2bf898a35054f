"""Salience DETR, ResNet-50, 4 scales, COCO 2017, 12 epochs: the official model and recipe.

The recipe is ``configs/common/recipes/detr_coco_12ep.py`` (AdamW 1e-4 for a total batch of 10, scaled linearly to
yours; lr x0.1 for the backbone, sampling offsets and reference points; 1000-iteration warmup; clipping at 0.1; lr
drop after epoch 10 of 12). COCO categories are contiguous 0..79 here (the official model keeps 91 COCO ids; its
checkpoint converts with ``scripts/convert_checkpoint.py`` into a ``num_classes=91`` model).
"""

from ....configs.common.recipes.detr_coco_12ep import dataloader, lr_multiplier, optimizer, train
from .models.salience_detr_r50 import model

train.output_dir = "./output/salience_detr_r50_4scale_12ep"
