"""Modeling pieces that Salience DETR adds to the shared two-stage DETR core."""

from .background_embedding import BackgroundEmbedding
from .filtered_encoder import SalienceEncoder, SalienceEncoderLayer, SelectedTokenAttention
from .focus_supervision import FocusForegroundLoss, foreground_targets
from .redundancy_removal import RedundancyRemovalSelector, unit_boxes
from .salience_prediction import SaliencePredictor, TopDownSalience
from .salience_supervision import (
    DEFAULT_LIMIT_RANGE,
    SalienceLoss,
    TokenScoreSupervision,
    feature_strides,
    salience_focal_loss,
    salience_target_maps,
)
from .token_filter import HierarchicalTokenFilter, TokenSelection
from .token_fusion import CSPRepLayer, GlobalContextGate, RepVGGPluXBlock, RepVGGPluXNetwork

__all__ = [
    "DEFAULT_LIMIT_RANGE",
    "BackgroundEmbedding",
    "CSPRepLayer",
    "FocusForegroundLoss",
    "GlobalContextGate",
    "HierarchicalTokenFilter",
    "RedundancyRemovalSelector",
    "RepVGGPluXBlock",
    "RepVGGPluXNetwork",
    "SalienceEncoder",
    "SalienceEncoderLayer",
    "SalienceLoss",
    "SaliencePredictor",
    "SelectedTokenAttention",
    "TokenScoreSupervision",
    "TokenSelection",
    "TopDownSalience",
    "feature_strides",
    "foreground_targets",
    "salience_focal_loss",
    "salience_target_maps",
    "unit_boxes",
]
