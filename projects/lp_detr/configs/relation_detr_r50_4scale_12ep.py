"""Relation DETR, ResNet-50, 4 scales, COCO 2017, 12 epochs: the official recipe.

The official training script of Relation DETR is the one of Salience DETR (same author): AdamW, lr 1e-4,
weight decay 1e-4 (none on norms and biases), lr x0.1 for the backbone and for the sampling offsets and reference
points of deformable attention, 1000-iteration linear warmup, lr x0.1 after epoch 10 of 12, gradient clipping at
norm 0.1. The official code does not scale the lr with the batch; like ``salience_detr_r50_4scale_12ep.py`` the lr
is given for a total batch of 10 (``train.lr_reference_batch_size``) and scaled linearly to the actual batch.

COCO categories are contiguous 0..79 here; the official checkpoint (91 COCO ids) converts with
``scripts/convert_checkpoint.py --model relation_detr`` into this model with ``model.num_classes=91``.
"""

from ...salience_detr.configs.salience_detr_r50_4scale_12ep import dataloader, lr_multiplier, optimizer, train
from .models.relation_detr_r50 import model

# The recipe (optimizer, lr factors, batch, schedule, clipping, data) is Salience DETR's, imported from its config.
model.num_classes = 80
train.output_dir = "./output/relation_detr_r50_4scale_12ep"
