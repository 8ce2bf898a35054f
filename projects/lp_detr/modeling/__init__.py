"""Modeling pieces that Relation DETR and LP-DETR add to the shared two-stage DETR core."""

from .box_relation import BoxRelationEmbedding, ProgressiveRelationEmbedding, box_relation_features, pairwise_giou
from .position_embedding import NonPersistentPositionEmbeddingSine
from .relation_decoder import RelationDecoder
from .relation_detr import RelationDETR, repeat_targets
from .relation_encoder import LayerFusionEncoder
from .relation_transformer import RelationTransformer

__all__ = [
    "BoxRelationEmbedding",
    "LayerFusionEncoder",
    "NonPersistentPositionEmbeddingSine",
    "ProgressiveRelationEmbedding",
    "RelationDETR",
    "RelationDecoder",
    "RelationTransformer",
    "box_relation_features",
    "pairwise_giou",
    "repeat_targets",
]
