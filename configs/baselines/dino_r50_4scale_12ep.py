"""DINO, ResNet-50, 4 scales, COCO 2017, 12 epochs: the shared two-stage DETR as it is.

The baseline of Salience DETR's efficiency comparison (paper Table 9): the model of
``configs/common/models/two_stage_detr_r50.py`` (a deformable encoder over *all* tokens, top-900 query selection,
focal class loss) with the training recipe of Salience DETR and Relation DETR, so that the rows of an efficiency
table differ only in the model.
"""

from ..common.models.two_stage_detr_r50 import model
from ..common.recipes.detr_coco_12ep import dataloader, lr_multiplier, optimizer, train

train.output_dir = "./output/dino_r50_4scale_12ep"
