"""Salience DETR on the synthetic data with the example decoder attention of docs/architecture.md: the one config
edit that goes with the one new module (``tests/fixtures/box_distance_attention.py``)."""

from core.lazy import LazyCall as L
from tests.fixtures.box_distance_attention import BoxDistanceSelfAttention

from ...projects.salience_detr.configs.salience_detr_r18_synthetic import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model.transformer.decoder.layer.self_attn = L(BoxDistanceSelfAttention)(
    embed_dim="${....embed_dim}", num_heads=8, init_scale=1.0
)

train.output_dir = "./output/salience_detr_box_distance_synthetic"
