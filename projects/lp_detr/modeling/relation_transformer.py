"""Relation DETR's transformer: the shared two-stage transformer plus the training-only hybrid branch."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from modeling.transformer import (
    MultiLevelTokens,
    TransformerOutput,
    TwoStageTransformer,
    box_head,
    class_head,
)

__all__ = ["RelationTransformer"]

HYBRID_KEY = "hybrid"


class RelationTransformer(TwoStageTransformer):
    """Two-stage transformer with a one-to-many *hybrid* branch in training.

    The hybrid branch has its own two-stage heads (``hybrid_class_head``, ``hybrid_box_head``) on the same
    projected memory, selects its own top-``hybrid_num_proposals`` proposals, starts from its own learnt query
    contents (``hybrid_tgt_embed``) and runs the shared decoder without relations and without denoising queries.
    Its predictions are ``extras["hybrid"]``, a :class:`~modeling.transformer.TransformerOutput` (the detector
    matches them one-to-many). In inference the branch does not run.

    Args:
        encoder: e.g. a :class:`~.relation_encoder.LayerFusionEncoder`.
        decoder: e.g. a :class:`~.relation_decoder.RelationDecoder`.
        num_classes: classes ``C``.
        embed_dim: token channels ``E``.
        num_feature_levels: levels ``L``.
        num_queries: matching queries (one-to-one branch).
        hybrid_num_proposals: queries of the hybrid branch (0 disables it).
        query_selector: top-k when None.
        memory_fusion: optional module on the memory maps (none in Relation DETR).
        prior_prob: initial foreground probability of the class heads.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        num_classes: int,
        embed_dim: int = 256,
        num_feature_levels: int = 4,
        num_queries: int = 900,
        hybrid_num_proposals: int = 1500,
        query_selector: nn.Module | None = None,
        memory_fusion: nn.Module | None = None,
        prior_prob: float = 0.01,
    ):
        super().__init__(
            encoder,
            decoder,
            num_classes,
            embed_dim=embed_dim,
            num_feature_levels=num_feature_levels,
            num_queries=num_queries,
            query_selector=query_selector,
            memory_fusion=memory_fusion,
            prior_prob=prior_prob,
        )
        if hybrid_num_proposals < 0:
            raise ValueError(f"hybrid_num_proposals must be >= 0, got {hybrid_num_proposals}")
        self.hybrid_num_proposals = hybrid_num_proposals
        if hybrid_num_proposals:
            self.hybrid_tgt_embed = nn.Embedding(hybrid_num_proposals, embed_dim)
            self.hybrid_class_head = class_head(embed_dim, num_classes, prior_prob)
            self.hybrid_box_head = box_head(embed_dim)
            nn.init.normal_(self.hybrid_tgt_embed.weight)

    def auxiliary_branches(self, memory: Tensor, tokens: MultiLevelTokens) -> dict[str, Any]:
        """In training, ``{"hybrid": TransformerOutput}`` of the hybrid branch; nothing in inference."""
        if not (self.training and self.hybrid_num_proposals):
            return {}
        output_memory, proposals = self.proposal_generator(memory, tokens.mask, tokens.shapes)
        logits = self.hybrid_class_head(output_memory)
        boxes = (self.hybrid_box_head(output_memory) + proposals).sigmoid()
        k = min(self.hybrid_num_proposals, logits.shape[1])
        index = logits.max(-1)[0].topk(k, dim=1)[1].unsqueeze(-1)
        logits = logits.gather(1, index.expand(-1, -1, logits.shape[-1]))
        boxes = boxes.gather(1, index.expand(-1, -1, 4))
        target = self.hybrid_tgt_embed.weight[:k].expand(boxes.shape[0], -1, -1)
        dec_logits, dec_boxes = self.decoder(target, boxes.detach(), memory, tokens, None, update_self_attn_mask=False)
        return {HYBRID_KEY: TransformerOutput(dec_logits, dec_boxes, logits, boxes, {})}
