"""The two-stage DETR transformer shared by Salience DETR and Relation DETR / LP-DETR.

``forward`` runs short named steps, each an extension point:

1. :meth:`TwoStageTransformer.flatten_inputs` - per-level maps to token sequences (+ level embeddings);
2. :meth:`TwoStageTransformer.encode` - the encoder (Salience DETR overrides this with its filtered encoder);
3. :meth:`TwoStageTransformer.fuse_memory` - optional ``memory_fusion`` module on the memory maps;
4. :meth:`TwoStageTransformer.encoder_predictions` - class logits and boxes of every token;
5. ``query_selector`` - which tokens initialise the queries (top-k; Salience: redundancy removal);
6. :meth:`TwoStageTransformer.initial_queries` - learnt contents, detached boxes, denoising queries first;
7. ``decoder`` - iterative refinement;
8. :meth:`TwoStageTransformer.auxiliary_branches` - a variant's extra branches on the memory (none here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .heads import box_head, class_head
from .multi_level import MultiLevelTokens, flatten_levels, unflatten_levels, valid_ratios
from .proposals import ProposalGenerator
from .query_selection import TopKQuerySelector

__all__ = ["TransformerOutput", "TwoStageTransformer"]


class TransformerOutput(NamedTuple):
    """What the two-stage transformer predicts.

    Attributes:
        dec_logits: ``[num_dec_layers, B, N, C]`` (``N`` = denoising queries + ``K`` matching queries).
        dec_boxes: ``[num_dec_layers, B, N, 4]`` normalised cxcywh.
        enc_logits: ``[B, K, C]`` logits of the selected two-stage proposals.
        enc_boxes: ``[B, K, 4]`` their boxes, normalised cxcywh.
        extras: what a variant adds (Salience DETR: ``"salience"``, per level ``[B, 1, h_l, w_l]`` logits).
    """

    dec_logits: Tensor
    dec_boxes: Tensor
    enc_logits: Tensor
    enc_boxes: Tensor
    extras: dict[str, Any]


class TwoStageTransformer(nn.Module):
    """Deformable encoder, two-stage query selection and refining decoder.

    Args:
        encoder: maps :class:`MultiLevelTokens` to a ``[B, S, E]`` memory (e.g. ``DeformableEncoder``).
        decoder: a ``DeformableDecoder`` (or subclass).
        num_classes: classes ``C``.
        embed_dim: token channels ``E``.
        num_feature_levels: levels ``L``.
        num_queries: matching queries ``Q`` (rows of ``tgt_embed``).
        query_selector: ``selector(class_logits, tokens) -> index [B, K]``; top-``num_queries`` when None.
        memory_fusion: optional module mapping the list of memory maps ``[B, E, h_l, w_l]`` to a new list.
        prior_prob: initial foreground probability of the encoder class head.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        num_classes: int,
        embed_dim: int = 256,
        num_feature_levels: int = 4,
        num_queries: int = 900,
        query_selector: nn.Module | None = None,
        memory_fusion: nn.Module | None = None,
        prior_prob: float = 0.01,
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.num_feature_levels = num_feature_levels
        self.num_queries = num_queries
        self.level_embeds = nn.Parameter(torch.empty(num_feature_levels, embed_dim))
        self.encoder = encoder
        self.memory_fusion = memory_fusion
        self.proposal_generator = ProposalGenerator(embed_dim)
        self.enc_class_head = class_head(embed_dim, num_classes, prior_prob)
        self.enc_box_head = box_head(embed_dim)
        self.query_selector = query_selector if query_selector is not None else TopKQuerySelector(num_queries)
        self.tgt_embed = nn.Embedding(num_queries, embed_dim)
        self.decoder = decoder
        nn.init.normal_(self.level_embeds)
        nn.init.normal_(self.tgt_embed.weight)

    def flatten_inputs(
        self, feats: Sequence[Tensor], level_masks: Sequence[Tensor], pos_embeds: Sequence[Tensor]
    ) -> MultiLevelTokens:
        """Flattens per-level maps (``[B, E, h_l, w_l]``, masks ``[B, h_l, w_l]``) into tokens."""
        if len(feats) != self.num_feature_levels:
            raise ValueError(f"transformer expects {self.num_feature_levels} feature levels, got {len(feats)}")
        pos = [p + level.view(1, -1, 1, 1) for p, level in zip(pos_embeds, self.level_embeds)]
        spatial_shapes = torch.as_tensor([m.shape[-2:] for m in level_masks], device=feats[0].device)
        level_start_index = torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))
        return MultiLevelTokens(
            feats=flatten_levels(feats),
            pos=flatten_levels(pos),
            mask=flatten_levels(level_masks),
            level_masks=list(level_masks),
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            valid_ratios=valid_ratios(level_masks),
        )

    def encode(self, tokens: MultiLevelTokens) -> tuple[Tensor, dict[str, Any]]:
        """Encoder memory ``[B, S, E]`` and extra outputs (none here)."""
        return self.encoder(tokens), {}

    def fuse_memory(self, memory: Tensor, tokens: MultiLevelTokens) -> Tensor:
        """Applies ``memory_fusion`` to the memory as maps, when there is one."""
        if self.memory_fusion is None:
            return memory
        fused = self.memory_fusion(unflatten_levels(memory, tokens.shapes))
        return flatten_levels(fused)

    def encoder_predictions(self, memory: Tensor, tokens: MultiLevelTokens) -> tuple[Tensor, Tensor]:
        """Class logits ``[B, S, C]`` and boxes ``[B, S, 4]`` of every token's proposal."""
        output_memory, proposals = self.proposal_generator(memory, tokens.mask, tokens.shapes)
        logits = self.enc_class_head(output_memory)
        boxes = (self.enc_box_head(output_memory) + proposals).sigmoid()
        return logits, boxes

    def initial_queries(self, enc_boxes: Tensor, denoising: Any | None) -> tuple[Tensor, Tensor]:
        """Query contents ``[B, N, E]`` and reference boxes ``[B, N, 4]`` of the decoder.

        The ``K`` matching queries take the first ``K`` rows of ``tgt_embed`` and the detached selected boxes; the
        denoising queries, when given (an object with ``prepend_to(target, reference)``), come first.
        """
        batch, num_selected = enc_boxes.shape[:2]
        target = self.tgt_embed.weight[:num_selected].expand(batch, -1, -1)
        reference = enc_boxes.detach()
        if denoising is not None:
            target, reference = denoising.prepend_to(target, reference)
        return target, reference

    def forward(
        self,
        feats: Sequence[Tensor],
        level_masks: Sequence[Tensor],
        pos_embeds: Sequence[Tensor],
        denoising: Any | None = None,
    ) -> TransformerOutput:
        """Runs the transformer.

        Args:
            feats: per level, ``[B, E, h_l, w_l]`` features, finest first.
            level_masks: per level, ``[B, h_l, w_l]`` bool, ``True`` on padding.
            pos_embeds: per level, ``[B, E, h_l, w_l]`` position embeddings.
            denoising: optional denoising queries (``modeling.denoising.DenoisingQueries``): contents, boxes and
                the self-attention mask.

        Returns:
            :class:`TransformerOutput`.
        """
        tokens = self.flatten_inputs(feats, level_masks, pos_embeds)
        memory, extras = self.encode(tokens)
        memory = self.fuse_memory(memory, tokens)
        enc_logits, enc_boxes = self.encoder_predictions(memory, tokens)
        index = self.query_selector(enc_logits, tokens).unsqueeze(-1)
        enc_logits = enc_logits.gather(1, index.expand(-1, -1, enc_logits.shape[-1]))
        enc_boxes = enc_boxes.gather(1, index.expand(-1, -1, 4))
        target, reference = self.initial_queries(enc_boxes, denoising)
        attn_mask = _crop_attn_mask(denoising, target.shape[1])
        dec_logits, dec_boxes = self.decoder(target, reference, memory, tokens, attn_mask)
        extras.update(self.auxiliary_branches(memory, tokens))
        return TransformerOutput(dec_logits, dec_boxes, enc_logits, enc_boxes, extras)

    def auxiliary_branches(self, memory: Tensor, tokens: MultiLevelTokens) -> dict[str, Any]:
        """Extra outputs a variant computes from the encoder memory ``[B, S, E]`` after the main decoding
        (Relation DETR: its training-only hybrid branch); none here."""
        del memory, tokens
        return {}


def _crop_attn_mask(denoising: Any | None, num_queries: int) -> Tensor | None:
    """The denoising self-attention mask for ``num_queries`` decoder queries (fewer when fewer were selected)."""
    if denoising is None:
        return None
    return denoising.attn_mask[:num_queries, :num_queries]
