"""The shared two-stage DETR transformer: deformable encoder, proposals, query selection, refining decoder."""

from .decoder import DeformableDecoder, DeformableDecoderLayer
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
from .query_selection import TopKQuerySelector
from .two_stage import TransformerOutput, TwoStageTransformer

__all__ = [
    "FFN",
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
    "grid_proposals",
    "inverse_sigmoid",
    "level_masks_from_image_mask",
    "prior_bias",
    "unflatten_levels",
    "valid_ratios",
]
