"""Salience DETR trained from scratch on the embedded synthetic dataset, on a CPU (what ``make demo`` runs).

The official model (``models/salience_detr_r50.py``) made CPU-sized (``configs/common/models/cpu_size.py``: a
half-width ResNet-18 from scratch, 128-channel tokens, 2 encoder and 2 decoder layers, 100 queries) with Salience
DETR's filtering over 2 encoder layers, the top 100 tokens in each layer's self-attention and one RepVGG block per
token-fusion layer (the official three cost more than the whole encoder on a CPU); the recipe is
``configs/common/recipes/synthetic_cpu.py``. Measured AP and time: see the README.
"""

from data.synthetic import THING_CLASSES

from ....configs.common.models.cpu_size import cpu_sized
from ....configs.common.recipes.synthetic_cpu import dataloader, lr_multiplier, optimizer, train
from .models.salience_detr_r50 import model

cpu_sized(model)
model.num_classes = len(THING_CLASSES)
model.transformer.encoder.token_filter.layer_filter_ratio = (1.0, 0.6)
model.transformer.encoder.layer.token_attention.topk = 100
model.transformer.memory_fusion.num_blocks = 1

train.output_dir = "./output/salience_detr_r18_synthetic"
