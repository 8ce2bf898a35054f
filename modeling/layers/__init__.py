"""DETR building blocks shared by every detector: deformable attention, position embeddings, MLP."""

from .biased_attention import biased_attention
from .mlp import MLP
from .ms_deform_attn import (
    SAMPLING_BACKENDS,
    SINGLE_OP_NAME,
    MultiScaleDeformableAttention,
    ms_deform_attn_flops,
    ms_deform_attn_gather,
    ms_deform_attn_sampling,
    register_sampling_backend,
    set_sampling_backend,
)
from .position_embedding import PositionEmbeddingSine, get_sine_pos_embed, sine_frequencies
from .switches import kernel_backends, module_attributes, reference_kernels, select_kernel_backend

__all__ = [
    "SAMPLING_BACKENDS",
    "SINGLE_OP_NAME",
    "MLP",
    "MultiScaleDeformableAttention",
    "PositionEmbeddingSine",
    "biased_attention",
    "get_sine_pos_embed",
    "kernel_backends",
    "module_attributes",
    "ms_deform_attn_gather",
    "ms_deform_attn_flops",
    "ms_deform_attn_sampling",
    "reference_kernels",
    "register_sampling_backend",
    "select_kernel_backend",
    "set_sampling_backend",
    "sine_frequencies",
]
