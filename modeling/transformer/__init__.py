"""The shared two-stage DETR transformer: deformable encoder, proposals, query selection, refining decoder."""

from .decoder import DecoderLayerState, DeformableDecoder, DeformableDecoderLayer, QuerySelfAttention
from .encoder import DeformableEncoder, DeformableEncoderLayer
from .ffn import FFN, build_activation
from .heads import box_head, class_head, clone_modules, prior_bias
from .multi_level import (
    MultiLevelTokens,
    encoder_reference_points,
    flatten_levels,
    inverse_sigmoid,
    level_masks_from_image_mask,
    unflatten_levels,
    valid_ratios,
)
from .proposals import ProposalGenerator, grid_proposals
from .query_selection import TopKQuerySelector, gather_proposals, topk_proposal_index
from .two_stage import EncoderOutput, ProjectedMemory, TransformerOutput, TwoStageTransformer

__all__ = [
    "FFN",
    "DecoderLayerState",
    "EncoderOutput",
    "ProjectedMemory",
    "QuerySelfAttention",
    "DeformableDecoder",
    "DeformableDecoderLayer",
    "DeformableEncoder",
    "DeformableEncoderLayer",
    "MultiLevelTokens",
    "ProposalGenerator",
    "TopKQuerySelector",
    "TransformerOutput",
    "TwoStageTransformer",
    "box_head",
    "build_activation",
    "class_head",
    "clone_modules",
    "encoder_reference_points",
    "flatten_levels",
    "gather_proposals",
    "grid_proposals",
    "inverse_sigmoid",
    "level_masks_from_image_mask",
    "prior_bias",
    "topk_proposal_index",
    "unflatten_levels",
    "valid_ratios",
]
