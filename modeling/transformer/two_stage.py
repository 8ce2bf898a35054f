"""The two-stage DETR transformer shared by Salience DETR, Relation DETR / LP-DETR and their combinations.

``forward`` runs short named steps; the variants come in as modules given to the constructor, not subclasses:

1. :meth:`TwoStageTransformer.flatten_inputs` - per-level maps to token sequences (+ level embeddings);
2. ``encoder`` - a deformable encoder, or Salience DETR's filtered encoder (which also scores the tokens);
3. ``memory_fusion`` - optional module on the memory maps (Salience DETR's token fusion);
4. :meth:`TwoStageTransformer.encoder_predictions` - class logits and boxes of every token;
5. ``query_selector`` - which tokens initialise the queries (top-k; Salience: redundancy removal);
6. :meth:`TwoStageTransformer.initial_queries` - learnt contents, detached boxes, denoising queries first;
7. ``decoder`` - iterative refinement (with an optional relation bias);
8. ``branches`` - extra decodings of the same memory (Relation DETR's training-only hybrid branch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .heads import box_head, class_head
from .multi_level import MultiLevelTokens, flatten_levels, unflatten_levels, valid_ratios
from .proposals import ProposalGenerator
from .query_selection import TopKQuerySelector, gather_proposals

__all__ = ["EncoderOutput", "ProjectedMemory", "TransformerOutput", "TwoStageTransformer"]


class EncoderOutput(NamedTuple):
    """What an encoder returns besides a plain memory tensor.

    Attributes:
        memory: ``[B, S, E]``.
        token_scores: per level, finest first, ``[B, 1, h_l, w_l]`` logits of how much each token matters
            (Salience DETR's salience), or None.
    """

    memory: Tensor
    token_scores: list[Tensor] | None = None


class ProjectedMemory(NamedTuple):
    """The memory projected for the two-stage heads, and the proposal of every token.

    Attributes:
        memory: ``[B, S, E]`` the encoder memory (after fusion).
        projected: ``[B, S, E]`` the memory projected by the proposal generator.
        proposals: ``[B, S, 4]`` inverse-sigmoid cxcywh proposals (``+inf`` where invalid).
    """

    memory: Tensor
    projected: Tensor
    proposals: Tensor


class TransformerOutput(NamedTuple):
    """What the two-stage transformer predicts.

    Attributes:
        dec_logits: ``[num_dec_layers, B, N, C]`` (``N`` = denoising queries + ``K`` matching queries).
        dec_boxes: ``[num_dec_layers, B, N, 4]`` normalised cxcywh.
        enc_logits: ``[B, K, C]`` logits of the selected two-stage proposals.
        enc_boxes: ``[B, K, 4]`` their boxes, normalised cxcywh.
        token_scores: the encoder's per-level token scores (Salience DETR's salience logits), or None.
        branches: the outputs of the transformer's branches that ran, by branch name (each a
            ``TransformerOutput``; e.g. ``"hybrid"`` in training).
    """

    dec_logits: Tensor
    dec_boxes: Tensor
    enc_logits: Tensor
    enc_boxes: Tensor
    token_scores: list[Tensor] | None = None
    branches: Mapping[str, TransformerOutput] = {}


class TwoStageTransformer(nn.Module):
    """Deformable encoder, two-stage query selection and refining decoder.

    Args:
        encoder: ``encoder(tokens, two_stage=self)`` -> ``[B, S, E]`` memory or an :class:`EncoderOutput` (e.g.
            ``DeformableEncoder``; Salience DETR's filtered encoder uses this transformer's proposal projection and
            encoder class head).
        decoder: a ``DeformableDecoder``.
        num_classes: classes ``C``.
        embed_dim: token channels ``E``.
        num_feature_levels: levels ``L``.
        num_queries: matching queries ``Q`` (rows of ``tgt_embed``).
        query_selector: ``selector(class_logits, tokens) -> index [B, K]``; top-``num_queries`` when None.
        memory_fusion: optional module mapping the list of memory maps ``[B, E, h_l, w_l]`` to a new list.
        branches: extra decodings, by name: modules ``branch(memory: ProjectedMemory, tokens, two_stage=self)``
            returning a :class:`TransformerOutput` or None (when they do not run, e.g. in inference).
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
        branches: Mapping[str, nn.Module | None] | None = None,
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
        self.branches = nn.ModuleDict({k: v for k, v in (branches or {}).items() if v is not None})
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
            valid_ratios=valid_ratios(level_masks, torch.promote_types(feats[0].dtype, torch.float32)),
        )

    def encode(self, tokens: MultiLevelTokens) -> EncoderOutput:
        """The encoder's memory ``[B, S, E]`` (and its token scores, if it has any)."""
        encoded = self.encoder(tokens, two_stage=self)
        return encoded if isinstance(encoded, EncoderOutput) else EncoderOutput(encoded)

    def fuse_memory(self, memory: Tensor, tokens: MultiLevelTokens) -> Tensor:
        """Applies ``memory_fusion`` to the memory as maps, when there is one."""
        if self.memory_fusion is None:
            return memory
        fused = self.memory_fusion(unflatten_levels(memory, tokens.shapes))
        return flatten_levels(fused)

    def project(self, memory: Tensor, tokens: MultiLevelTokens) -> ProjectedMemory:
        """The memory projected for the two-stage heads, with a proposal per token (shared by the branches)."""
        projected, proposals = self.proposal_generator(memory, tokens.mask, tokens.shapes)
        return ProjectedMemory(memory, projected, proposals)

    @staticmethod
    def proposal_predictions(
        memory: ProjectedMemory, class_head: nn.Module, box_head: nn.Module
    ) -> tuple[Tensor, Tensor]:
        """Class logits ``[B, S, C]`` and boxes ``[B, S, 4]`` of every token's proposal, by the given heads."""
        logits = class_head(memory.projected)
        boxes = (box_head(memory.projected) + memory.proposals).sigmoid()
        return logits, boxes

    def encoder_predictions(self, memory: ProjectedMemory) -> tuple[Tensor, Tensor]:
        """Class logits ``[B, S, C]`` and boxes ``[B, S, 4]`` of the encoder heads."""
        return self.proposal_predictions(memory, self.enc_class_head, self.enc_box_head)

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
        encoded = self.encode(tokens)
        memory = self.project(self.fuse_memory(encoded.memory, tokens), tokens)
        enc_logits, enc_boxes = self.encoder_predictions(memory)
        enc_logits, enc_boxes = gather_proposals(enc_logits, enc_boxes, self.query_selector(enc_logits, tokens))
        target, reference = self.initial_queries(enc_boxes, denoising)
        attn_mask = _crop_attn_mask(denoising, target.shape[1])
        dec_logits, dec_boxes = self.decoder(target, reference, memory.memory, tokens, attn_mask)
        branches = {name: branch(memory, tokens, two_stage=self) for name, branch in self.branches.items()}
        branches = {name: output for name, output in branches.items() if output is not None}
        return TransformerOutput(dec_logits, dec_boxes, enc_logits, enc_boxes, encoded.token_scores, branches)


def _crop_attn_mask(denoising: Any | None, num_queries: int) -> Tensor | None:
    """The denoising self-attention mask for ``num_queries`` decoder queries (fewer when fewer were selected)."""
    if denoising is None:
        return None
    return denoising.attn_mask[:num_queries, :num_queries]
