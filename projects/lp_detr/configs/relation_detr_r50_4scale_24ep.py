"""Relation DETR, ResNet-50, 4 scales, COCO 2017, 24 epochs: the 12-epoch recipe with the lr drop after epoch 20."""

from ....configs.common.coco_schedule import multistep_schedule
from .relation_detr_r50_4scale_12ep import dataloader, model, optimizer, train  # noqa: F401 (the config)

train.epochs = 24
train.output_dir = "./output/relation_detr_r50_4scale_24ep"

lr_multiplier = multistep_schedule(24, 20, warmup_iters=1000)
