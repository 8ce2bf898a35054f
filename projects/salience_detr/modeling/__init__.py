"""Modeling pieces that Salience DETR adds to the shared two-stage DETR core."""

from .salience_supervision import (
    DEFAULT_LIMIT_RANGE,
    SalienceLoss,
    feature_strides,
    salience_focal_loss,
    salience_target_maps,
)

__all__ = [
    "DEFAULT_LIMIT_RANGE",
    "SalienceLoss",
    "feature_strides",
    "salience_focal_loss",
    "salience_target_maps",
]
