"""Deformable DETR decoder with iterative box refinement and look-forward-twice (DINO style).

A decoder layer is three modules given to it (built by ``LazyCall`` in configs): a query self-attention, a
cross-attention to the encoder memory, and an FFN. The decoder hands every layer a :class:`DecoderLayerState`
(layer index, query positions, reference boxes, the boxes of the two previous layers, the memory, the
self-attention mask and bias) by name, so a new attention variant is one module that reads what it needs from
the state, and one config edit. Relation DETR's and LP-DETR's box-relation bias is a module given to the
decoder (``relation``): it maps the previous layers' boxes to one bias per head, which the self-attention adds
to its logits.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modeling.layers import MLP, biased_attention, get_sine_pos_embed

from .heads import box_head, class_head, clone_modules
from .multi_level import MultiLevelTokens, inverse_sigmoid

__all__ = ["DecoderLayerState", "DeformableDecoder", "DeformableDecoderLayer", "QuerySelfAttention"]


class DecoderLayerState(NamedTuple):
    """What a decoder layer may use besides its queries; passed by name.

    Attributes:
        index: the layer's index.
        query_pos: ``[B, Q, E]`` position embeddings of the queries.
        reference_points: ``[B, Q, L, 4]`` reference boxes per level (normalised cxcywh, scaled by valid ratios).
        memory: ``[B, S, E]`` encoder memory.
        tokens: the flattened multi-level inputs (shapes, start indices, padding mask).
        self_attn_mask: ``[Q, Q]`` bool, ``True`` where a query may not attend to another (denoising groups).
        self_attn_bias: ``[B * heads, Q, Q]`` float biases added to the self-attention logits, or None.
        previous_boxes: ``[B, Q, 4]`` boxes predicted two layers back (the initial reference boxes for layer 1),
            or None for layer 0.
        boxes: ``[B, Q, 4]`` boxes predicted by the previous layer, or None for layer 0.
    """

    index: int
    query_pos: Tensor
    reference_points: Tensor
    memory: Tensor
    tokens: MultiLevelTokens
    self_attn_mask: Tensor | None = None
    self_attn_bias: Tensor | None = None
    previous_boxes: Tensor | None = None
    boxes: Tensor | None = None

    def attention_mask(self) -> Tensor | None:
        """The ``attn_mask`` of a multi-head attention: the bias with ``-inf`` where the mask blocks, else the
        mask (or None)."""
        if self.self_attn_bias is None:
            return self.self_attn_mask
        if self.self_attn_mask is None:
            return self.self_attn_bias
        return self.self_attn_bias.masked_fill(self.self_attn_mask, float("-inf"))


class QuerySelfAttention(nn.MultiheadAttention):
    """Multi-head self-attention of the decoder queries: queries and keys carry the position embeddings.

    Reads ``query_pos`` and the mask/bias (:meth:`DecoderLayerState.attention_mask`) from the layer state.

    Args:
        embed_dim: query channels ``E``.
        num_heads: attention heads.
        dropout: dropout of the attention weights.
        backend: ``"torch"`` (the reference: :class:`torch.nn.MultiheadAttention`) or ``"fused"``: when a bias is
            given and gradients are on (Relation DETR / LP-DETR training), :func:`biased_attention`, which needs
            two ``[B * heads, Q, Q]`` buffers instead of PyTorch's composite path (used whenever the mask needs a
            gradient); otherwise the same as ``"torch"``.
    """

    #: the backend that defines the computation (exports and tests compare against it)
    reference_backend = "torch"
    backends = ("torch", "fused")

    def __init__(self, embed_dim: int = 256, num_heads: int = 8, dropout: float = 0.0, backend: str = "torch"):
        super().__init__(embed_dim, num_heads, dropout=dropout, batch_first=True)
        if backend not in self.backends:
            raise ValueError(f"unknown self-attention backend {backend!r}, expected one of {self.backends}")
        self.backend = backend
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.xavier_uniform_(self.out_proj.weight)

    def forward(self, query: Tensor, state: DecoderLayerState) -> Tensor:  # type: ignore[override]
        """``[B, Q, E]`` attended queries (no residual, no norm: the layer adds them)."""
        with_pos = query + state.query_pos
        bias = state.self_attn_bias
        if (
            self.backend == "fused"
            and bias is not None
            and torch.is_grad_enabled()
            and not (self.training and self.dropout > 0)
        ):
            return self._fused(query, with_pos, bias, state.self_attn_mask)
        # no attention weights asked for: PyTorch runs its fused scaled-dot-product kernel (unless the mask needs
        # a gradient)
        return super().forward(with_pos, with_pos, query, attn_mask=state.attention_mask(), need_weights=False)[0]

    def _fused(self, query: Tensor, with_pos: Tensor, bias: Tensor, mask: Tensor | None) -> Tensor:
        batch, length, embed_dim = query.shape
        heads = self.num_heads
        weight, in_bias = self.in_proj_weight, self.in_proj_bias
        qk = F.linear(with_pos, weight[: 2 * embed_dim], in_bias[: 2 * embed_dim])
        v = F.linear(query, weight[2 * embed_dim :], in_bias[2 * embed_dim :])

        def split(x: Tensor) -> Tensor:  # [B, Q, E] -> [B * heads, Q, E / heads], the layout of the bias
            return x.reshape(batch, length, heads, -1).transpose(1, 2).reshape(batch * heads, length, -1)

        out = biased_attention(split(qk[..., :embed_dim]), split(qk[..., embed_dim:]), split(v), bias, mask)
        out = out.reshape(batch, heads, length, -1).transpose(1, 2).reshape(batch, length, embed_dim)
        return self.out_proj(out)


class DeformableDecoderLayer(nn.Module):
    """Self-attention, cross-attention to the memory, FFN; the attentions each with residual + post-LayerNorm.

    Args:
        self_attn: module ``(query [B, Q, E], state) -> [B, Q, E]`` (e.g. :class:`QuerySelfAttention`); its
            ``num_heads`` is the layer's.
        cross_attn: module with the call of ``MultiScaleDeformableAttention`` (query with position, reference
            points, value, spatial shapes, level start index, padding mask) and an ``embed_dim``.
        ffn: module ``[B, Q, E] -> [B, Q, E]`` that adds its own residual and norm (e.g. ``FFN``).
        dropout: dropout of the two attention residual branches.
    """

    def __init__(self, self_attn: nn.Module, cross_attn: nn.Module, ffn: nn.Module, dropout: float = 0.0):
        super().__init__()
        self.embed_dim = cross_attn.embed_dim
        self.num_heads = self_attn.num_heads
        self.self_attn = self_attn
        self.self_attn_dropout = nn.Dropout(dropout)
        self.self_attn_norm = nn.LayerNorm(self.embed_dim)
        self.cross_attn = cross_attn
        self.cross_attn_dropout = nn.Dropout(dropout)
        self.cross_attn_norm = nn.LayerNorm(self.embed_dim)
        self.ffn = ffn

    def forward(self, query: Tensor, state: DecoderLayerState) -> Tensor:
        """Updates the queries ``[B, Q, E]``."""
        query = self.self_attn_norm(query + self.self_attn_dropout(self.self_attn(query, state)))
        tokens = state.tokens
        attended = self.cross_attn(
            query + state.query_pos,
            state.reference_points,
            state.memory,
            tokens.spatial_shapes,
            tokens.level_start_index,
            tokens.mask,
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

    Args:
        layer: decoder layer to copy (e.g. :class:`DeformableDecoderLayer`).
        num_layers: number of layers.
        num_classes: classes ``C`` of the class heads.
        prior_prob: initial foreground probability of the class heads.
        relation: optional module ``(previous_boxes [B, Q, 4], boxes [B, Q, 4], layer_idx) -> [B, heads, Q, Q]``
            giving the self-attention bias of layers ``1..num_layers-1`` from the boxes of the two layers before
            (Relation DETR's ``BoxRelationEmbedding``, LP-DETR's progressive one); a module with
            ``enabled == False`` gives none.
        conditional_query_scale: after the first layer, scale the query positions by an MLP of the query
            (Relation DETR's conditional scaling).
    """

    def __init__(
        self,
        layer: nn.Module,
        num_layers: int,
        num_classes: int,
        prior_prob: float = 0.01,
        relation: nn.Module | None = None,
        conditional_query_scale: bool = False,
    ):
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
        self.query_scale = MLP(embed_dim, embed_dim, embed_dim, 2) if conditional_query_scale else None
        num_heads = getattr(layer, "num_heads", None)
        if relation is not None and num_heads is not None and relation.num_heads != num_heads:
            raise ValueError(f"relation has {relation.num_heads} heads, the decoder layers {num_heads}")
        self.relation = relation

    def query_position(self, layer_idx: int, query: Tensor, reference_input: Tensor) -> Tensor:
        """Position embedding ``[B, Q, E]`` of the queries from their reference boxes ``[B, Q, L, 4]``."""
        position = self.ref_point_head(get_sine_pos_embed(reference_input[:, :, 0, :], self.embed_dim // 2))
        if self.query_scale is None or layer_idx == 0:
            return position
        return position * self.query_scale(query)

    def relation_bias(self, layer_idx: int, previous_boxes: Tensor, boxes: Tensor) -> Tensor | None:
        """``[B * heads, Q, Q]`` self-attention bias of layer ``layer_idx`` from the two previous layers' boxes."""
        if self.relation is None or not getattr(self.relation, "enabled", True):
            return None
        return self.relation(previous_boxes, boxes, layer_idx).flatten(0, 1)

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
        with_relation: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """Decodes the queries.

        Args:
            query: ``[B, Q, E]`` initial query contents.
            reference: ``[B, Q, 4]`` initial reference boxes, normalised cxcywh.
            memory: ``[B, S, E]`` encoder memory.
            tokens: the flattened inputs (shapes, padding mask, valid ratios).
            self_attn_mask: optional ``[Q, Q]`` bool mask of the query self-attention (``True`` = blocked).
            with_relation: give the layers the ``relation`` bias (False: Relation DETR's hybrid branch).

        Returns:
            ``(logits [num_layers, B, Q, C], boxes [num_layers, B, Q, 4])``.
        """
        ratio_scale = tokens.valid_ratios.repeat(1, 1, 2)[:, None]  # [B, 1, L, 4]
        all_logits, all_boxes = [], []
        previous_boxes = boxes = bias = None
        for idx, layer in enumerate(self.layers):
            reference_input = reference.detach()[:, :, None] * ratio_scale
            state = DecoderLayerState(
                index=idx,
                query_pos=self.query_position(idx, query, reference_input),
                reference_points=reference_input,
                memory=memory,
                tokens=tokens,
                self_attn_mask=self_attn_mask,
                self_attn_bias=bias,
                previous_boxes=previous_boxes,
                boxes=boxes,
            )
            query = layer(query, state)
            previous_boxes = reference if idx == 0 else boxes
            logits, boxes = self.predict(idx, query, reference)
            all_logits.append(logits)
            all_boxes.append(boxes)
            if idx < self.num_layers - 1:
                bias = self.relation_bias(idx + 1, previous_boxes, boxes) if with_relation else None
                reference = self.refine(idx, query, reference)
        return torch.stack(all_logits), torch.stack(all_boxes)
