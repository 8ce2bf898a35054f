"""Relation DETR, ResNet-50, 4 scales, COCO 2017, 12 epochs: the official model and recipe.

The official training script of Relation DETR is the one of Salience DETR (same author): the recipe is
``configs/common/recipes/detr_coco_12ep.py``. The official code does not scale the lr with the batch; the lr is
given for a total batch of 10 (``train.lr_reference_batch_size``) and scaled linearly to the actual batch.

COCO categories are contiguous 0..79 here; the official checkpoint (91 COCO ids) converts with
``scripts/convert_checkpoint.py --model relation_detr`` into this model with ``model.num_classes=91``.
"""

from ....configs.common.recipes.detr_coco_12ep import dataloader, lr_multiplier, optimizer, train
from .models.relation_detr_r50 import model

train.output_dir = "./output/relation_detr_r50_4scale_12ep"
