"""Meta-architectures: detectors assembled from a backbone, a neck, a transformer and a criterion."""

from .two_stage_detr import TwoStageDETR

__all__ = ["TwoStageDETR"]
