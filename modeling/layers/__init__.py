"""DETR building blocks shared by every detector: deformable attention, position embeddings, MLP."""

from .mlp import MLP
from .ms_deform_attn import MultiScaleDeformableAttention, ms_deform_attn_sampling
from .position_embedding import PositionEmbeddingSine, get_sine_pos_embed, sine_frequencies

__all__ = [
    "MLP",
    "MultiScaleDeformableAttention",
    "PositionEmbeddingSine",
    "get_sine_pos_embed",
    "ms_deform_attn_sampling",
    "sine_frequencies",
]
