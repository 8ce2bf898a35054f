"""LP-DETR, ResNet-18 from scratch, on the embedded synthetic dataset: trains on a CPU.

``relation_detr_r18_synthetic.py`` (the size, data, schedule and optimizer of Salience DETR's synthetic config)
with LP-DETR's progressive relation of ``models/lp_detr_r50.py`` (``Lambda`` is ``[2, 3]`` with 2 decoder layers;
no chunking or checkpointing at 100 queries). The learnt ``Lambda`` table is logged and written to
``relation_weights.json`` / ``.csv`` in ``train.output_dir`` at each evaluation and after training
(:class:`projects.lp_detr.hooks.RelationWeightsWriter` in ``train.hooks``).
"""

from core.lazy import LazyCall as L
from projects.lp_detr.hooks import RelationWeightsWriter

from .models import lp_detr_r50 as _lp
from .relation_detr_r18_synthetic import dataloader, lr_multiplier, model, optimizer, train

model.transformer.decoder.relation = _lp.model.transformer.decoder.relation
model.transformer.decoder.relation.chunk_size = None
model.transformer.decoder.relation.checkpoint = False

train.hooks = [L(RelationWeightsWriter)(period="${...eval_period}")]
train.output_dir = "./output/lp_detr_r18_synthetic"
