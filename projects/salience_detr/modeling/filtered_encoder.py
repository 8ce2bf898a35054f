"""Salience DETR's filtered encoder: each layer updates only its selected tokens (gather -> attend -> scatter)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from modeling.transformer import DeformableEncoderLayer, MultiLevelTokens, clone_modules, encoder_reference_points

from .background_embedding import BackgroundEmbedding
from .token_filter import TokenSelection

__all__ = ["SalienceEncoder", "SalienceEncoderLayer", "SelectedTokenAttention"]


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b, n]]``: ``[B, S, *D]`` gathered to ``[B, N, *D]``."""
    flat = x.flatten(2)
    gathered = flat.gather(1, index.unsqueeze(-1).expand(-1, -1, flat.shape[-1]))
    return gathered.view(*index.shape, *x.shape[2:])


class SelectedTokenAttention(nn.Module):
    """Multi-head self-attention among the ``topk`` highest-scoring tokens, residual + LayerNorm.

    Args:
        embed_dim: token channels.
        num_heads: attention heads.
        topk: number of tokens that attend to each other (fewer when fewer are given).
        dropout: attention and residual dropout.
    """

    def __init__(self, embed_dim: int = 256, num_heads: int = 8, topk: int = 300, dropout: float = 0.0):
        super().__init__()
        self.topk = topk
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(embed_dim)
        nn.init.xavier_uniform_(self.attn.in_proj_weight)
        nn.init.xavier_uniform_(self.attn.out_proj.weight)

    def forward(self, query: Tensor, query_pos: Tensor, score: Tensor) -> Tensor:
        """Updates the top-scoring tokens of ``query`` ``[B, N, E]`` (positions ``[B, N, E]``, scores ``[B, N]``)."""
        index = score.topk(min(self.topk, score.shape[1]), dim=1)[1]
        selected = gather_tokens(query, index)
        with_pos = selected + gather_tokens(query_pos, index)
        attended = self.attn(with_pos, with_pos, selected)[0]
        selected = self.norm(selected + self.dropout(attended))
        return query.scatter(1, index.unsqueeze(-1).expand(-1, -1, query.shape[-1]), selected)


class SalienceEncoderLayer(nn.Module):
    """Self-attention among the most confident selected tokens, then a deformable encoder layer.

    Args:
        embed_dim: token channels.
        num_heads: attention heads.
        d_ffn: hidden channels of the FFN.
        num_levels: feature levels.
        num_points: sampling points per head and level.
        topk_sa: tokens taking part in the self-attention.
        dropout: dropout.
        activation: FFN activation.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        d_ffn: int = 1024,
        num_levels: int = 4,
        num_points: int = 4,
        topk_sa: int = 300,
        dropout: float = 0.0,
        activation: str = "relu",
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.token_attention = SelectedTokenAttention(embed_dim, num_heads, topk_sa, dropout)
        self.deformable = DeformableEncoderLayer(
            embed_dim, num_heads, d_ffn, num_levels, num_points, dropout, activation
        )

    def forward(
        self,
        query: Tensor,
        query_pos: Tensor,
        value: Tensor,
        reference_points: Tensor,
        tokens: MultiLevelTokens,
        score: Tensor,
    ) -> Tensor:
        """Updates the selected tokens ``[B, N, E]``.

        Args:
            query: ``[B, N, E]`` selected tokens.
            query_pos: ``[B, N, E]`` their position embeddings.
            value: ``[B, S, E]`` the multi-level features attended to.
            reference_points: ``[B, N, L, 2]``.
            tokens: the flattened inputs (shapes, padding mask).
            score: ``[B, N]`` confidence of each token (class confidence times salience).
        """
        query = self.token_attention(query, query_pos, score)
        return self.deformable(
            query, query_pos, value, reference_points, tokens.spatial_shapes, tokens.level_start_index, tokens.mask
        )


class SalienceEncoder(nn.Module):
    """Encoder whose layer ``i`` updates only the tokens selected for it, attending to the input features.

    After the last layer, the tokens not updated by it receive a learnt background embedding (if enabled).

    Args:
        layer: encoder layer to copy (:class:`SalienceEncoderLayer`).
        num_layers: number of layers.
        background_embedding: a :class:`BackgroundEmbedding`, or None to disable it.
    """

    def __init__(self, layer: nn.Module, num_layers: int = 6, background_embedding: BackgroundEmbedding | None = None):
        super().__init__()
        self.layers = clone_modules(layer, num_layers)
        self.num_layers = num_layers
        self.embed_dim = layer.embed_dim
        self.background_embedding = background_embedding

    def forward(
        self, tokens: MultiLevelTokens, selection: TokenSelection, score_head: Callable[[Tensor], Tensor]
    ) -> Tensor:
        """Encodes.

        Args:
            tokens: the flattened inputs.
            selection: the tokens of every layer (``len(selection.layer_indices) == num_layers``).
            score_head: class head ``[B, N, E] -> [B, N, C]``; its best class logit times the salience ranks
                the tokens of the self-attention.

        Returns:
            ``[B, S, E]`` memory.
        """
        if len(selection.layer_indices) != self.num_layers:
            raise ValueError(f"{len(selection.layer_indices)} token selections for {self.num_layers} encoder layers")
        reference_points = encoder_reference_points(tokens.shapes, tokens.valid_ratios)
        output = tokens.feats
        for layer, index in zip(self.layers, selection.layer_indices):
            query = gather_tokens(output, index)
            score = score_head(query).max(-1)[0] * selection.foreground_score.gather(1, index)
            query = layer(
                query,
                gather_tokens(tokens.pos, index),
                tokens.feats,
                gather_tokens(reference_points, index),
                tokens,
                score,
            )
            output = self._write_back(output, query, index, selection.focus_counts)
        return self._add_background(output, tokens, selection.layer_indices[-1])

    @staticmethod
    def _write_back(output: Tensor, query: Tensor, index: Tensor, focus_counts: Tensor) -> Tensor:
        """Scatters the first ``focus_counts[b]`` updated tokens of each image back into ``output``."""
        keep = torch.arange(index.shape[1], device=index.device)[None, :] < focus_counts[:, None]
        query = torch.where(keep.unsqueeze(-1), query, gather_tokens(output, index))
        return output.scatter(1, index.unsqueeze(-1).expand(-1, -1, output.shape[-1]), query)

    def _add_background(self, output: Tensor, tokens: MultiLevelTokens, last_index: Tensor) -> Tensor:
        """Adds the background embedding to the valid tokens outside the last layer's selection."""
        if self.background_embedding is None:
            return output
        background = torch.cat([self.background_embedding(m).flatten(2).transpose(1, 2) for m in tokens.level_masks], 1)
        background = background.scatter(1, last_index.unsqueeze(-1).expand(-1, -1, output.shape[-1]), 0.0)
        return output + background * (~tokens.mask).unsqueeze(-1)
