"""The 12-epoch DETR recipe (``detr_coco_12ep.py``) for 24 epochs, with the lr drop after epoch 20."""

from ..coco_schedule import multistep_schedule
from .detr_coco_12ep import dataloader, optimizer, train

train.epochs = 24

lr_multiplier = multistep_schedule(24, 20, warmup_iters=1000)
