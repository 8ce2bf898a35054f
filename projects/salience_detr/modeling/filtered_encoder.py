"""Salience DETR's filtered encoder: the tokens are scored (salience), filtered level- and layer-wise, and each
layer updates only its selected tokens (gather -> attend -> scatter)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from modeling.transformer import EncoderOutput, MultiLevelTokens, clone_modules, encoder_reference_points

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

    def forward(self, query: Tensor, query_pos: Tensor, score: Tensor, real: Tensor | None = None) -> Tensor:
        """Updates the top-scoring tokens of ``query`` ``[B, N, E]`` (positions ``[B, N, E]``, scores ``[B, N]``).

        ``real`` (``[B, N]`` bool, static token budget only) hides the budget-padding tokens from the keys.
        """
        index = score.topk(min(self.topk, score.shape[1]), dim=1)[1]
        selected = gather_tokens(query, index)
        with_pos = selected + gather_tokens(query_pos, index)
        padding = None if real is None else ~real.gather(1, index)
        attended = self.attn(with_pos, with_pos, selected, key_padding_mask=padding, need_weights=False)[0]
        selected = self.norm(selected + self.dropout(attended))
        return query.scatter(1, index.unsqueeze(-1).expand(-1, -1, query.shape[-1]), selected)


class SalienceEncoderLayer(nn.Module):
    """Self-attention among the most confident selected tokens, then a deformable encoder layer.

    Args:
        token_attention: a :class:`SelectedTokenAttention`.
        deformable: a ``DeformableEncoderLayer``.
    """

    def __init__(self, token_attention: nn.Module, deformable: nn.Module):
        super().__init__()
        self.embed_dim = deformable.embed_dim
        self.token_attention = token_attention
        self.deformable = deformable

    def forward(
        self,
        query: Tensor,
        query_pos: Tensor,
        value: Tensor,
        reference_points: Tensor,
        tokens: MultiLevelTokens,
        score: Tensor,
        real: Tensor | None = None,
    ) -> Tensor:
        """Updates the selected tokens ``[B, N, E]``.

        Args:
            query: ``[B, N, E]`` selected tokens.
            query_pos: ``[B, N, E]`` their position embeddings.
            value: ``[B, S, E]`` the multi-level features attended to.
            reference_points: ``[B, N, L, 2]``.
            tokens: the flattened inputs (shapes, padding mask).
            score: ``[B, N]`` confidence of each token (class confidence times salience).
            real: ``[B, N]`` bool, the real tokens under a static token budget (None otherwise).
        """
        query = self.token_attention(query, query_pos, score, real)
        return self.deformable(
            query, query_pos, value, reference_points, tokens.spatial_shapes, tokens.level_start_index, tokens.mask
        )


class SalienceEncoder(nn.Module):
    """Salience DETR's encoder: salience prediction, hierarchical filtering, and layers updating their selection.

    The backbone tokens (features + position embeddings), projected like two-stage memory (the transformer's
    ``proposal_generator``), are scored level by level (``salience``) and filtered (``token_filter``); layer ``i``
    updates only the tokens selected for it, attending to the input features, and ranks them for its
    self-attention with the transformer's encoder class head times the salience. After the last layer, the tokens
    it did not update receive a learnt background embedding (if enabled).

    Args:
        layer: encoder layer to copy (:class:`SalienceEncoderLayer`).
        num_layers: number of layers.
        salience: a ``TopDownSalience`` (per-level salience logits).
        token_filter: a ``HierarchicalTokenFilter`` with one layer ratio per encoder layer.
        background_embedding: a :class:`BackgroundEmbedding`, or None to disable it.
        static_budget: select with a static token budget (ONNX export on a fixed canvas; see the token filter).
    """

    def __init__(
        self,
        layer: nn.Module,
        num_layers: int,
        salience: nn.Module,
        token_filter: nn.Module,
        background_embedding: BackgroundEmbedding | None = None,
        static_budget: bool = False,
    ):
        super().__init__()
        if token_filter.num_layers != num_layers:
            raise ValueError(f"token_filter has {token_filter.num_layers} layer ratios for {num_layers} encoder layers")
        if token_filter.num_levels != salience.num_levels:
            raise ValueError(
                f"token_filter has {token_filter.num_levels} level ratios for {salience.num_levels} levels"
            )
        self.layers = clone_modules(layer, num_layers)
        self.num_layers = num_layers
        self.embed_dim = layer.embed_dim
        self.salience = salience
        self.token_filter = token_filter
        self.background_embedding = background_embedding
        self.static_budget = static_budget

    def forward(self, tokens: MultiLevelTokens, two_stage: nn.Module) -> EncoderOutput:
        """Encodes.

        Args:
            tokens: the flattened inputs.
            two_stage: the transformer, whose ``proposal_generator`` projects the tokens for the salience and
                whose ``enc_class_head`` ranks the tokens of the self-attention.

        Returns:
            the ``[B, S, E]`` memory, and the salience logits (per level ``[B, 1, h_l, w_l]``, finest first) as
            its token scores.
        """
        projected = two_stage.proposal_generator(tokens.feats + tokens.pos, tokens.mask, tokens.shapes)[0]
        salience = self.salience(projected, tokens)
        selection = self.token_filter(salience, tokens, static_budget=self.static_budget)
        return EncoderOutput(self.encode_selected(tokens, selection, two_stage.enc_class_head), salience)

    def encode_selected(
        self, tokens: MultiLevelTokens, selection: TokenSelection, score_head: Callable[[Tensor], Tensor]
    ) -> Tensor:
        """The ``[B, S, E]`` memory of the layers updating ``selection``'s tokens (one selection per layer).

        Args:
            tokens: the flattened inputs.
            selection: the tokens of every layer.
            score_head: class head ``[B, N, E] -> [B, N, C]``; its best class logit times the salience ranks
                the tokens of the self-attention.
        """
        if len(selection.layer_indices) != self.num_layers:
            raise ValueError(f"{len(selection.layer_indices)} token selections for {self.num_layers} encoder layers")
        reference_points = encoder_reference_points(tokens.shapes, tokens.valid_ratios)
        output = tokens.feats
        for i, (layer, index) in enumerate(zip(self.layers, selection.layer_indices)):
            real = selection.real_tokens(i)
            query = gather_tokens(output, index)
            score = score_head(query).max(-1)[0] * selection.foreground_score.gather(1, index)
            if real is not None:
                score = score.masked_fill(~real, float("-inf"))
            pos = gather_tokens(tokens.pos, index)
            query = layer(query, pos, tokens.feats, gather_tokens(reference_points, index), tokens, score, real)
            output = _write_back(output, query, index, selection.write_counts(i))
        return self._add_background(output, tokens, selection.layer_indices[-1], selection.real_tokens(-1))

    def _add_background(self, output: Tensor, tokens: MultiLevelTokens, last_index: Tensor, real: Tensor | None):
        """Adds the background embedding to the valid tokens outside the last layer's (real) selection."""
        if self.background_embedding is None:
            return output
        background = torch.cat([self.background_embedding(m).flatten(2).transpose(1, 2) for m in tokens.level_masks], 1)
        expand = last_index.unsqueeze(-1).expand(-1, -1, output.shape[-1])
        if real is None:
            background = background.scatter(1, expand, 0.0)
        else:  # budget-padding tokens of the last layer keep their background
            background = background.scatter(1, expand, background.gather(1, expand) * (~real).unsqueeze(-1))
        return output + background * (~tokens.mask).unsqueeze(-1)


def _write_back(output: Tensor, query: Tensor, index: Tensor, counts: Tensor) -> Tensor:
    """Scatters the first ``counts[b]`` updated tokens of each image back into ``output``."""
    keep = torch.arange(index.shape[1], device=index.device)[None, :] < counts[:, None]
    query = torch.where(keep.unsqueeze(-1), query, gather_tokens(output, index))
    return output.scatter(1, index.unsqueeze(-1).expand(-1, -1, output.shape[-1]), query)
