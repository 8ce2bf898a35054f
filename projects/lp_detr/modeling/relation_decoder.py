"""Relation DETR's decoder: the shared refining decoder with conditional query scaling and box-relation biases."""

from __future__ import annotations

from torch import Tensor, nn

from modeling.layers import MLP
from modeling.transformer import DeformableDecoder

__all__ = ["RelationDecoder"]


class RelationDecoder(DeformableDecoder):
    """:class:`~modeling.transformer.DeformableDecoder` whose self-attention is biased by box relations.

    * Query positions: layer 0 uses ``ref_point_head(sine(reference))``; later layers multiply it by
      ``query_scale(query)`` (conditional scaling).
    * Self-attention: layer 0 gets the decoder's mask as given (denoising groups, or none). Layer ``l + 1`` gets
      ``relation(boxes_{l-1}, boxes_l)`` (``[B * heads, Q, Q]`` additive biases), where ``boxes_l`` are the boxes
      layer ``l`` predicted and ``boxes_{-1}`` the initial reference boxes, with ``-inf`` where the decoder's mask
      blocks attention.

    ``forward(..., update_self_attn_mask=False)`` decodes without relations (Relation DETR's hybrid branch).

    Args:
        layer: decoder layer to copy (a ``DeformableDecoderLayer``; needs ``num_heads``).
        num_layers: number of layers.
        num_classes: classes of the class heads.
        relation: a :class:`~.box_relation.BoxRelationEmbedding` (or the progressive variant); None decodes
            without relations.
        prior_prob: initial foreground probability of the class heads.
    """

    def __init__(
        self,
        layer: nn.Module,
        num_layers: int,
        num_classes: int,
        relation: nn.Module | None = None,
        prior_prob: float = 0.01,
    ):
        super().__init__(layer, num_layers, num_classes, prior_prob)
        self.num_heads = layer.num_heads
        if relation is not None and relation.num_heads != self.num_heads:
            raise ValueError(f"relation has {relation.num_heads} heads, the decoder layers {self.num_heads}")
        self.query_scale = MLP(self.embed_dim, self.embed_dim, self.embed_dim, 2)
        self.relation = relation

    def query_position(self, layer_idx: int, query: Tensor, reference_input: Tensor) -> Tensor:
        """Sine position of the reference boxes, scaled by ``query_scale(query)`` after the first layer."""
        position = super().query_position(layer_idx, query, reference_input)
        return position if layer_idx == 0 else position * self.query_scale(query)

    def next_self_attn_mask(
        self, layer_idx: int, self_attn_mask: Tensor | None, previous_boxes: Tensor, boxes: Tensor
    ) -> Tensor | None:
        """Relation biases ``[B * heads, Q, Q]`` of layer ``layer_idx + 1``, ``-inf`` where the mask blocks."""
        if self.relation is None or not getattr(self.relation, "enabled", True):
            return self_attn_mask
        relation = self.relation(previous_boxes, boxes, layer_idx + 1).flatten(0, 1)
        if self_attn_mask is not None:
            relation = relation.masked_fill(self_attn_mask, float("-inf"))
        return relation
