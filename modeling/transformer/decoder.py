"""Deformable DETR decoder with iterative box refinement and look-forward-twice (DINO style)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from modeling.layers import MLP, MultiScaleDeformableAttention, get_sine_pos_embed

from .ffn import FFN
from .heads import box_head, class_head, clone_modules
from .multi_level import MultiLevelTokens, inverse_sigmoid

__all__ = ["DeformableDecoder", "DeformableDecoderLayer"]


class DeformableDecoderLayer(nn.Module):
    """Query self-attention, deformable cross-attention to the memory, FFN; each residual + post-LayerNorm.

    Args:
        embed_dim: query channels ``E``.
        num_heads: attention heads (self- and cross-attention).
        d_ffn: hidden channels of the FFN.
        num_levels: feature levels ``L`` of the memory.
        num_points: sampling points per head and level.
        dropout: dropout of the self-attention weights and of the residual branches.
        activation: FFN activation.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        d_ffn: int = 1024,
        num_levels: int = 4,
        num_points: int = 4,
        dropout: float = 0.0,
        activation: str = "relu",
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.self_attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.self_attn_dropout = nn.Dropout(dropout)
        self.self_attn_norm = nn.LayerNorm(embed_dim)
        self.cross_attn = MultiScaleDeformableAttention(
            embed_dim=embed_dim, num_heads=num_heads, num_levels=num_levels, num_points=num_points
        )
        self.cross_attn_dropout = nn.Dropout(dropout)
        self.cross_attn_norm = nn.LayerNorm(embed_dim)
        self.ffn = FFN(embed_dim, d_ffn, dropout, activation)
        nn.init.xavier_uniform_(self.self_attn.in_proj_weight)
        nn.init.xavier_uniform_(self.self_attn.out_proj.weight)

    def forward(
        self,
        query: Tensor,
        query_pos: Tensor,
        reference_points: Tensor,
        value: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        key_padding_mask: Tensor | None = None,
        self_attn_mask: Tensor | None = None,
    ) -> Tensor:
        """Updates the queries.

        Args:
            query: ``[B, Q, E]``.
            query_pos: ``[B, Q, E]`` position embeddings of the queries.
            reference_points: ``[B, Q, L, 4]`` reference boxes (normalised cxcywh, scaled by the valid ratios).
            value: ``[B, S, E]`` encoder memory.
            spatial_shapes: ``[L, 2]``.
            level_start_index: ``[L]``.
            key_padding_mask: ``[B, S]``, ``True`` on padded memory tokens.
            self_attn_mask: ``[Q, Q]`` or ``[B * num_heads, Q, Q]``; bool (``True`` = blocked) or an additive
                float bias (e.g. a relation embedding).

        Returns:
            ``[B, Q, E]``.
        """
        query_with_pos = query + query_pos
        attended = self.self_attn(query_with_pos, query_with_pos, query, attn_mask=self_attn_mask)[0]
        query = self.self_attn_norm(query + self.self_attn_dropout(attended))
        attended = self.cross_attn(
            query + query_pos, reference_points, value, spatial_shapes, level_start_index, key_padding_mask
        )
        query = self.cross_attn_norm(query + self.cross_attn_dropout(attended))
        return self.ffn(query)


class DeformableDecoder(nn.Module):
    """Stack of decoder layers; each layer predicts classes and refines the reference boxes.

    Layer ``i`` embeds its (detached) reference boxes as query positions, updates the queries, and predicts
    ``boxes_i = sigmoid(box_heads[i](norm(query)) + inverse_sigmoid(reference_i))``. The next reference is
    ``sigmoid(box_heads[i](query) + inverse_sigmoid(reference_i.detach()))``. ``boxes_i`` uses the reference
    *without* detaching it, so the loss of layer ``i`` also trains the refinement of layer ``i - 1``
    (look forward twice).

    Extension points (override in a subclass): :meth:`query_position` (e.g. conditional scaling),
    :meth:`next_self_attn_mask` (e.g. a box-relation bias for the next layer's self-attention, from the boxes of
    the last two layers), :meth:`predict` and :meth:`refine`.

    Args:
        layer: decoder layer to copy (e.g. :class:`DeformableDecoderLayer`).
        num_layers: number of layers.
        num_classes: classes ``C`` of the class heads.
        prior_prob: initial foreground probability of the class heads.
    """

    def __init__(self, layer: nn.Module, num_layers: int, num_classes: int, prior_prob: float = 0.01):
        super().__init__()
        embed_dim = layer.embed_dim
        self.embed_dim = embed_dim
        self.num_layers = num_layers
        self.num_classes = num_classes
        self.layers = clone_modules(layer, num_layers)
        self.ref_point_head = MLP(2 * embed_dim, embed_dim, embed_dim, 2)
        self.class_heads = nn.ModuleList(class_head(embed_dim, num_classes, prior_prob) for _ in range(num_layers))
        self.box_heads = nn.ModuleList(box_head(embed_dim) for _ in range(num_layers))
        self.norm = nn.LayerNorm(embed_dim)

    def query_position(self, layer_idx: int, query: Tensor, reference_input: Tensor) -> Tensor:
        """Position embedding ``[B, Q, E]`` of the queries from their reference boxes ``[B, Q, L, 4]``."""
        del layer_idx, query
        return self.ref_point_head(get_sine_pos_embed(reference_input[:, :, 0, :], self.embed_dim // 2))

    def next_self_attn_mask(
        self, layer_idx: int, self_attn_mask: Tensor | None, previous_boxes: Tensor, boxes: Tensor
    ) -> Tensor | None:
        """Self-attention mask of layer ``layer_idx + 1``; the base decoder keeps the given mask.

        Args:
            layer_idx: index of the layer that just ran.
            self_attn_mask: the mask given to the decoder (e.g. denoising groups), or None.
            previous_boxes: ``[B, Q, 4]`` boxes layer ``layer_idx - 1`` predicted (for layer 0: the initial
                reference boxes).
            boxes: ``[B, Q, 4]`` boxes layer ``layer_idx`` predicted.
        """
        del layer_idx, previous_boxes, boxes
        return self_attn_mask

    def predict(self, layer_idx: int, query: Tensor, reference: Tensor) -> tuple[Tensor, Tensor]:
        """Class logits ``[B, Q, C]`` and boxes ``[B, Q, 4]`` (normalised cxcywh) of one layer."""
        normed = self.norm(query)
        logits = self.class_heads[layer_idx](normed)
        boxes = (self.box_heads[layer_idx](normed) + inverse_sigmoid(reference)).sigmoid()
        return logits, boxes

    def refine(self, layer_idx: int, query: Tensor, reference: Tensor) -> Tensor:
        """Reference boxes ``[B, Q, 4]`` of the next layer."""
        return (self.box_heads[layer_idx](query) + inverse_sigmoid(reference.detach())).sigmoid()

    def forward(
        self,
        query: Tensor,
        reference: Tensor,
        memory: Tensor,
        tokens: MultiLevelTokens,
        self_attn_mask: Tensor | None = None,
        update_self_attn_mask: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """Decodes the queries.

        Args:
            query: ``[B, Q, E]`` initial query contents.
            reference: ``[B, Q, 4]`` initial reference boxes, normalised cxcywh.
            memory: ``[B, S, E]`` encoder memory.
            tokens: the flattened inputs (shapes, padding mask, valid ratios).
            self_attn_mask: optional mask of the query self-attention (see the layer).
            update_self_attn_mask: call :meth:`next_self_attn_mask` between layers; when False every layer uses
                ``self_attn_mask`` as given (e.g. Relation DETR's hybrid branch, decoded without relations).

        Returns:
            ``(logits [num_layers, B, Q, C], boxes [num_layers, B, Q, 4])``.
        """
        ratio_scale = tokens.valid_ratios.repeat(1, 1, 2)[:, None]  # [B, 1, L, 4]
        all_logits, all_boxes = [], []
        attn_mask = self_attn_mask
        previous_boxes = reference
        for idx, layer in enumerate(self.layers):
            reference_input = reference.detach()[:, :, None] * ratio_scale
            query_pos = self.query_position(idx, query, reference_input)
            query = layer(
                query,
                query_pos,
                reference_input,
                memory,
                tokens.spatial_shapes,
                tokens.level_start_index,
                tokens.mask,
                attn_mask,
            )
            logits, boxes = self.predict(idx, query, reference)
            all_logits.append(logits)
            all_boxes.append(boxes)
            if idx < self.num_layers - 1:
                if update_self_attn_mask:
                    attn_mask = self.next_self_attn_mask(idx, self_attn_mask, previous_boxes, boxes)
                previous_boxes = boxes
                reference = self.refine(idx, query, reference)
        return torch.stack(all_logits), torch.stack(all_boxes)
