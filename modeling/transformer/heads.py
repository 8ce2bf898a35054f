"""Prediction heads shared by the two-stage DETRs: class logits and box deltas, with the DETR initialisation."""

from __future__ import annotations

import copy
import math

from torch import nn

from modeling.layers import MLP

__all__ = ["box_head", "class_head", "clone_modules", "prior_bias"]


def prior_bias(prior_prob: float) -> float:
    """Logit bias that makes ``sigmoid(bias) == prior_prob`` (focal-loss initialisation)."""
    if not 0.0 < prior_prob < 1.0:
        raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob}")
    return -math.log((1 - prior_prob) / prior_prob)


def class_head(embed_dim: int, num_classes: int, prior_prob: float = 0.01) -> nn.Linear:
    """``Linear(embed_dim, num_classes)`` whose bias starts at the logit of ``prior_prob``."""
    head = nn.Linear(embed_dim, num_classes)
    nn.init.constant_(head.bias, prior_bias(prior_prob))
    return head


def box_head(embed_dim: int, num_layers: int = 3) -> MLP:
    """``MLP(embed_dim -> embed_dim -> 4)`` predicting box deltas (inverse-sigmoid space), last layer zeroed."""
    head = MLP(embed_dim, embed_dim, 4, num_layers)
    nn.init.zeros_(head.layers[-1].weight)
    nn.init.zeros_(head.layers[-1].bias)
    return head


def clone_modules(module: nn.Module, num: int) -> nn.ModuleList:
    """``num`` independent deep copies of ``module``."""
    if num < 1:
        raise ValueError(f"need at least one layer, got num={num}")
    return nn.ModuleList(copy.deepcopy(module) for _ in range(num))
