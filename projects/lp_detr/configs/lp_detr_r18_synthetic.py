"""LP-DETR trained from scratch on the embedded synthetic dataset, on a CPU.

``relation_detr_r18_synthetic.py`` with LP-DETR's progressive relation (``models/lp_detr_r50.py``; ``Lambda`` is
``[2, 3]`` with 2 decoder layers; no chunking or checkpointing at 100 queries). The learnt ``Lambda`` table is
logged and written to ``relation_weights.json`` / ``.csv`` in ``train.output_dir`` at each evaluation and after
training (:class:`projects.lp_detr.hooks.RelationWeightsWriter` in ``train.hooks``).
"""

from core.lazy import LazyCall as L
from data.synthetic import THING_CLASSES
from projects.lp_detr.hooks import RelationWeightsWriter

from ....configs.common.models.cpu_size import cpu_sized
from ....configs.common.recipes.synthetic_cpu import dataloader, lr_multiplier, optimizer, train
from .models.lp_detr_r50 import model

cpu_sized(model)
model.num_classes = len(THING_CLASSES)
model.transformer.decoder.relation.chunk_size = None
model.transformer.decoder.relation.checkpoint = False

train.hooks = [L(RelationWeightsWriter)(period="${...eval_period}")]
train.output_dir = "./output/lp_detr_r18_synthetic"
