"""LP-DETR, ResNet-50, 4 scales, COCO 2017, 24 epochs: the 12-epoch recipe with the lr drop after epoch 20."""

from ....configs.common.recipes.detr_coco_24ep import dataloader, lr_multiplier, optimizer, train
from .models.lp_detr_r50 import model

train.output_dir = "./output/lp_detr_r50_4scale_24ep"
