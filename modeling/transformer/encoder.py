"""Deformable transformer encoder (Deformable DETR): every token attends to sampled points of all levels."""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor, nn

from .heads import clone_modules
from .multi_level import MultiLevelTokens, encoder_reference_points

__all__ = ["DeformableEncoder", "DeformableEncoderLayer"]


class DeformableEncoderLayer(nn.Module):
    """Deformable self-attention then FFN, each with a residual and a post-LayerNorm.

    Args:
        self_attn: module with the call of ``MultiScaleDeformableAttention`` and an ``embed_dim`` (the tokens
            attend to sampled points of every level).
        ffn: module ``[B, N, E] -> [B, N, E]`` that adds its own residual and norm (e.g. ``FFN``).
        dropout: dropout on the attention's residual branch.
    """

    def __init__(self, self_attn: nn.Module, ffn: nn.Module, dropout: float = 0.0):
        super().__init__()
        self.embed_dim = self_attn.embed_dim
        self.self_attn = self_attn
        self.self_attn_dropout = nn.Dropout(dropout)
        self.self_attn_norm = nn.LayerNorm(self.embed_dim)
        self.ffn = ffn

    def forward(
        self,
        query: Tensor,
        query_pos: Tensor,
        value: Tensor,
        reference_points: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Updates ``N`` query tokens by attending to the flattened multi-level ``value``.

        Args:
            query: ``[B, N, E]`` tokens to update (all tokens, or a selected subset).
            query_pos: ``[B, N, E]`` their position embeddings.
            value: ``[B, S, E]`` flattened multi-level features.
            reference_points: ``[B, N, L, 2]`` normalised ``(x, y)`` per level.
            spatial_shapes: ``[L, 2]`` ``(h_l, w_l)``.
            level_start_index: ``[L]``.
            key_padding_mask: ``[B, S]``, ``True`` on padded value tokens.

        Returns:
            ``[B, N, E]`` updated tokens.
        """
        attended = self.self_attn(
            query + query_pos, reference_points, value, spatial_shapes, level_start_index, key_padding_mask
        )
        query = self.self_attn_norm(query + self.self_attn_dropout(attended))
        return self.ffn(query)


class DeformableEncoder(nn.Module):
    """``num_layers`` copies of an encoder layer, each attending to the output of the previous one.

    Args:
        layer: the layer to copy (e.g. :class:`DeformableEncoderLayer`).
        num_layers: number of layers.
    """

    def __init__(self, layer: nn.Module, num_layers: int = 6):
        super().__init__()
        self.layers = clone_modules(layer, num_layers)
        self.num_layers = num_layers
        self.embed_dim = layer.embed_dim

    def layer_outputs(self, tokens: MultiLevelTokens) -> Iterator[Tensor]:
        """Runs the layers one after the other, yielding each layer's ``[B, S, E]`` output.

        A variant that fuses the outputs of all layers (Relation DETR) iterates over this instead of calling
        :meth:`forward`.
        """
        reference_points = encoder_reference_points(tokens.shapes, tokens.valid_ratios)
        output = tokens.feats
        for layer in self.layers:
            output = layer(
                output,
                tokens.pos,
                output,
                reference_points,
                tokens.spatial_shapes,
                tokens.level_start_index,
                tokens.mask,
            )
            yield output

    def forward(self, tokens: MultiLevelTokens, two_stage: nn.Module | None = None) -> Tensor:
        """Encodes all tokens.

        Args:
            tokens: flattened multi-level inputs.
            two_stage: the calling two-stage transformer (unused here; filtered encoders use its heads).

        Returns:
            ``[B, S, E]`` memory: the output of the last layer.
        """
        del two_stage
        output = tokens.feats
        for output in self.layer_outputs(tokens):  # noqa: B007 (the last output is the memory)
            pass
        return output
