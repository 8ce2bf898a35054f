"""Modeling pieces that Relation DETR and LP-DETR add to the shared two-stage DETR core."""

from .box_relation import BoxRelationEmbedding, ProgressiveRelationEmbedding, box_relation_features, pairwise_giou
from .hybrid import HybridBranch, HybridMatchingLoss, repeat_targets
from .position_embedding import NonPersistentPositionEmbeddingSine
from .relation_encoder import LayerFusionEncoder

__all__ = [
    "BoxRelationEmbedding",
    "HybridBranch",
    "HybridMatchingLoss",
    "LayerFusionEncoder",
    "NonPersistentPositionEmbeddingSine",
    "ProgressiveRelationEmbedding",
    "box_relation_features",
    "pairwise_giou",
    "repeat_targets",
]
