"""Relation DETR, ResNet-50, 4 scales, COCO 2017, 12 epochs: the official recipe.

The official training script of Relation DETR is the one of Salience DETR (same author): AdamW, lr 1e-4,
weight decay 1e-4 (none on norms and biases), lr x0.1 for the backbone and for the sampling offsets and reference
points of deformable attention, 1000-iteration linear warmup, lr x0.1 after epoch 10 of 12, gradient clipping at
norm 0.1. The official code does not scale the lr with the batch; like ``salience_detr_r50_4scale_12ep.py`` the lr
is given for a total batch of 10 (``train.lr_reference_batch_size``) and scaled linearly to the actual batch.

COCO categories are contiguous 0..79 here; the official checkpoint (91 COCO ids) converts with
``scripts/convert_checkpoint.py --model relation_detr`` into this model with ``model.num_classes=91``.
"""

from engine.lazy import LazyCall as L
from engine.solver import get_default_optimizer_params

from ....configs.common.coco_schedule import multistep_schedule
from ....configs.common.data.coco_detr import dataloader
from ....configs.common.optim import AdamW as optimizer
from ....configs.common.train import train
from .models.relation_detr_r50 import model

model.num_classes = 80

optimizer.lr = 1e-4
optimizer.weight_decay = 1e-4
optimizer.params = L(get_default_optimizer_params)(
    base_lr="${..lr}",
    weight_decay_norm=0.0,
    weight_decay_bias=0.0,
    lr_factors={"backbone": 0.1, "sampling_offsets": 0.1, "reference_points": 0.1},
)

dataloader.train.total_batch_size = 10

train.epochs = 12
train.lr_reference_batch_size = 10
train.clip_grad.enabled = True
train.clip_grad.params.max_norm = 0.1
train.clip_grad.params.norm_type = 2
train.eval_period = 5000
train.checkpointer.period = 5000
train.output_dir = "./output/relation_detr_r50_4scale_12ep"

lr_multiplier = multistep_schedule(12, 10, warmup_iters=1000)
