"""Salience DETR's transformer: the shared two-stage transformer with a salience-filtered encoder."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from modeling.transformer import MultiLevelTokens, TwoStageTransformer

from .export import static_budget_encode
from .salience_prediction import TopDownSalience
from .token_filter import HierarchicalTokenFilter

__all__ = ["SalienceTransformer"]


class SalienceTransformer(TwoStageTransformer):
    """Two-stage transformer whose encoding step is salience-guided.

    ``encode``: the backbone tokens (features + position embeddings) are projected like two-stage memory
    (``proposal_generator``, shared with the two-stage heads), scored level by level (``salience``), filtered
    (``token_filter``) and encoded by a :class:`~.filtered_encoder.SalienceEncoder` that ranks tokens with the
    two-stage class head. Token fusion (``memory_fusion``) and redundancy removal (``query_selector``) are the
    base class's extension points.

    Args:
        encoder: a ``SalienceEncoder``.
        decoder: a ``DeformableDecoder``.
        num_classes: classes ``C``.
        level_filter_ratio: per level, kept fraction of valid tokens.
        layer_filter_ratio: per encoder layer, updated fraction of the kept tokens.
        embed_dim: token channels.
        num_feature_levels: levels ``L``.
        num_queries: matching queries.
        query_selector: e.g. ``RedundancyRemovalSelector``; top-k when None.
        memory_fusion: e.g. ``RepVGGPluXNetwork``; none when None.
        top_down_salience: modulate finer salience by coarser salience.
        prior_prob: initial foreground probability of the class heads.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        num_classes: int,
        level_filter_ratio: tuple[float, ...] = (0.25, 0.5, 1.0, 1.0),
        layer_filter_ratio: tuple[float, ...] = (1.0, 0.8, 0.6, 0.6, 0.4, 0.2),
        embed_dim: int = 256,
        num_feature_levels: int = 4,
        num_queries: int = 900,
        query_selector: nn.Module | None = None,
        memory_fusion: nn.Module | None = None,
        top_down_salience: bool = True,
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
        if len(level_filter_ratio) != num_feature_levels:
            raise ValueError(f"level_filter_ratio needs {num_feature_levels} values, got {list(level_filter_ratio)}")
        if len(layer_filter_ratio) != encoder.num_layers:
            raise ValueError(f"layer_filter_ratio needs {encoder.num_layers} values, got {list(layer_filter_ratio)}")
        self.salience = TopDownSalience(embed_dim, num_feature_levels, top_down_salience)
        self.token_filter = HierarchicalTokenFilter(level_filter_ratio, layer_filter_ratio)

    def encode(self, tokens: MultiLevelTokens) -> tuple[Tensor, dict[str, Any]]:
        """Filtered encoding; extras hold ``"salience"``: per level ``[B, 1, h_l, w_l]`` logits, finest first."""
        backbone_memory = self.proposal_generator(tokens.feats + tokens.pos, tokens.mask, tokens.shapes)[0]
        salience = self.salience(backbone_memory, tokens)
        selection = self.token_filter(salience, tokens)
        memory = self.encoder(tokens, selection, self.enc_class_head)
        return memory, {"salience": salience}

    def encode_for_export(self, tokens: MultiLevelTokens) -> tuple[Tensor, dict[str, Any]]:
        """:meth:`encode` for one image padded to a fixed canvas, with the canvas's static token budget and masks
        instead of image-size-dependent top-k sizes, so that a trace serves every image size
        (:class:`modeling.export.ExportableDetector`; see ``export.py``)."""
        return static_budget_encode(self, tokens)
