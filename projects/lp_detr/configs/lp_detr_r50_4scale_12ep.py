"""LP-DETR, ResNet-50, 4 scales, COCO 2017, 12 epochs: the Relation DETR recipe (``relation_detr_r50_4scale_12ep.py``)
with the progressive relation model (``models/lp_detr_r50.py``)."""

from .models.lp_detr_r50 import model
from .relation_detr_r50_4scale_12ep import dataloader, lr_multiplier, optimizer, train  # noqa: F401 (the config)

model.num_classes = 80

train.output_dir = "./output/lp_detr_r50_4scale_12ep"
