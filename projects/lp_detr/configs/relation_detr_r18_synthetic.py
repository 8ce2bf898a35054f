"""Relation DETR trained from scratch on the embedded synthetic dataset, on a CPU.

The official model (``models/relation_detr_r50.py``) made CPU-sized like Salience DETR's synthetic config
(``configs/common/models/cpu_size.py``: the same half-width ResNet-18, 128-channel tokens, 2 encoder and 2 decoder
layers, 100 queries and 100 hybrid-branch proposals), with the same recipe
(``configs/common/recipes/synthetic_cpu.py``).
With 100 queries the relation biases are small: no chunking or checkpointing.
"""

from data.synthetic import THING_CLASSES

from ....configs.common.models.cpu_size import cpu_sized
from ....configs.common.recipes.synthetic_cpu import dataloader, lr_multiplier, optimizer, train
from .models.relation_detr_r50 import model

cpu_sized(model)
model.num_classes = len(THING_CLASSES)

train.output_dir = "./output/relation_detr_r18_synthetic"
