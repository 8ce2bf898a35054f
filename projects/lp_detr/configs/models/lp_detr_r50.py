"""LP-DETR, ResNet-50, 4 feature levels: Relation DETR with layer-wise progressive relations.

The decoder's relation embedding mixes local, medium and global relations with learnable per-layer weights
(``Lambda``, ``[6, 3]``, initialised to 0.33) before the shared projection, with GIoU as a fifth relation feature;
all 8 heads get a bias. Every ablation switch is an argument of ``model.transformer.decoder.relation``
(``with_giou``, ``num_relation_heads``, ``normalize_lambda``, ``medium_form``, ``lambda_init``). The ``"fused"``
backend never holds the ``[B, Q, Q, 80]`` embeddings; with ``backend="pytorch"`` (the reference) the relation is
computed in blocks of 300 queries and recomputed in the backward pass (``chunk_size``, ``checkpoint``), since the
three embeddings per layer would otherwise take several GB at 1100 queries.
"""

from core.lazy import LazyCall as L
from projects.lp_detr.modeling import ProgressiveRelationEmbedding

from .relation_detr_r50 import model

model.transformer.decoder.relation = L(ProgressiveRelationEmbedding)(
    num_layers="${..num_layers}",
    num_heads="${..layer.self_attn.num_heads}",
    sine_dim=16,
    temperature=10000,
    scale=100,
    with_giou=True,
    num_relation_heads=8,
    lambda_init=0.33,
    normalize_lambda=False,
    medium_form="distance",
    global_value=1.0,
    chunk_size=300,
    checkpoint=True,
    backend="fused",
)
