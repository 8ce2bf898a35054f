"""Salience DETR's encoder with LP-DETR's decoder, trained from scratch on the embedded synthetic dataset, on a CPU.

The model of ``models/salience_lp_detr_r50.py`` made CPU-sized exactly as the two papers' synthetic configs
(``configs/common/models/cpu_size.py``; Salience DETR's filtering over 2 encoder layers, 100 tokens in each layer's
self-attention, one RepVGG block per token-fusion layer; LP-DETR's relation without chunking or checkpointing), with
their recipe (``configs/common/recipes/synthetic_cpu.py``) and LP-DETR's ``Lambda`` writer. Measured AP: see the
README.
"""

from core.lazy import LazyCall as L
from data.synthetic import THING_CLASSES
from projects.lp_detr.hooks import RelationWeightsWriter

from ....configs.common.models.cpu_size import cpu_sized
from ....configs.common.recipes.synthetic_cpu import dataloader, lr_multiplier, optimizer, train
from .models.salience_lp_detr_r50 import model

cpu_sized(model)
model.num_classes = len(THING_CLASSES)
model.transformer.encoder.token_filter.layer_filter_ratio = (1.0, 0.6)
model.transformer.encoder.layer.token_attention.topk = 100
model.transformer.memory_fusion.num_blocks = 1
model.transformer.decoder.relation.chunk_size = None
model.transformer.decoder.relation.checkpoint = False

train.hooks = [L(RelationWeightsWriter)(period="${...eval_period}")]
train.output_dir = "./output/salience_lp_detr_r18_synthetic"
