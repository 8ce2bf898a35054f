"""Config builders of the transformer layers' pieces, so that every model config writes each piece once.

Each returns the ``LazyCall`` of one module; the arguments are values or interpolations (relative to where the
returned node is placed, e.g. ``"${....embed_dim}"`` for a node four levels below the transformer).
"""

from core.lazy import LazyCall as L
from modeling.layers import MultiScaleDeformableAttention
from modeling.transformer import FFN, DeformableEncoderLayer, QuerySelfAttention


def deformable_attention(embed_dim, num_levels, num_heads=8, num_points=4):
    """Multi-scale deformable attention with the ``"auto"`` sampling backend (``"gather"``, except in training with
    heads narrower than 16 channels; ``"pytorch"``: the reference)."""
    return L(MultiScaleDeformableAttention)(
        embed_dim=embed_dim, num_heads=num_heads, num_levels=num_levels, num_points=num_points, backend="auto"
    )


def ffn(embed_dim, d_ffn=2048, dropout=0.0):
    """The post-norm residual FFN of the encoder and decoder layers."""
    return L(FFN)(embed_dim=embed_dim, d_ffn=d_ffn, dropout=dropout, activation="relu")


def encoder_layer(embed_dim, num_levels, d_ffn=2048):
    """A deformable encoder layer whose dimensions are the interpolations ``embed_dim`` / ``num_levels``, seen from
    its attention and FFN (one level below the layer)."""
    return L(DeformableEncoderLayer)(
        self_attn=deformable_attention(embed_dim, num_levels), ffn=ffn(embed_dim, d_ffn), dropout=0.0
    )


def query_self_attention(embed_dim, num_heads=8):
    """The decoder queries' multi-head self-attention, with the ``"fused"`` backend (memory-lean when a relation
    bias is trained; ``"torch"``: the reference)."""
    return L(QuerySelfAttention)(embed_dim=embed_dim, num_heads=num_heads, dropout=0.0, backend="fused")
