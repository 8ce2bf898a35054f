"""Relation DETR, ResNet-50, 4 feature levels (the official ``relation_detr_resnet50_800_1333`` model).

The shared two-stage DETR (``configs/common/models/two_stage_detr_r50.py``) with what Relation DETR adds, each a
module of its own:

* an encoder whose memory fuses the outputs of all its layers (``LayerFusionEncoder``);
* the decoder's self-attention biased by box relations between the previous and the current layer's boxes (4
  relation features x 16 sine features -> one bias per head: ``decoder.relation``), and conditional query scaling;
* a training-only hybrid branch of 1500 queries (``transformer.branches.hybrid``) matched to the ground truth
  repeated 6 times (``extra_losses.hybrid``), and the IoU-aware varifocal class loss.

LP-DETR (``lp_detr_r50.py``) swaps the relation embedding.
"""

from core.lazy import LazyCall as L
from projects.lp_detr.modeling import (
    BoxRelationEmbedding,
    HybridBranch,
    HybridMatchingLoss,
    LayerFusionEncoder,
    NonPersistentPositionEmbeddingSine,
)

from .....configs.common.models.two_stage_detr_r50 import model

model.position_embedding._target_ = NonPersistentPositionEmbeddingSine

transformer = model.transformer
transformer.encoder._target_ = LayerFusionEncoder
transformer.decoder.conditional_query_scale = True
transformer.decoder.relation = L(BoxRelationEmbedding)(
    num_heads="${..layer.self_attn.num_heads}",
    sine_dim=16,
    temperature=10000,
    scale=100,
    with_giou=False,
    chunk_size=None,
    checkpoint=False,
    backend="fused",
)
transformer.branches = L(dict)(
    hybrid=L(HybridBranch)(num_proposals=1500, num_classes="${...num_classes}", embed_dim="${...embed_dim}"),
)
del transformer

model.criterion.class_loss = "varifocal_iou_aware"
model.criterion.weight_dict.hybrid_suffix = "_hybrid"
model.extra_losses = L(dict)(hybrid=L(HybridMatchingLoss)(assign=6, branch="hybrid", suffix="_hybrid"))
