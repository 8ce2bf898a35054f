"""Choosing which encoder tokens become the decoder's queries (two-stage query selection)."""

from __future__ import annotations

from torch import Tensor, nn

from .multi_level import MultiLevelTokens

__all__ = ["TopKQuerySelector"]


class TopKQuerySelector(nn.Module):
    """The ``num_queries`` tokens with the highest best-class logit.

    A query selector is any module ``selector(class_logits [B, S, C], tokens) -> index [B, K]`` with
    ``K <= num_queries``; Salience DETR swaps in redundancy removal this way.

    Args:
        num_queries: number of queries ``Q``.
    """

    def __init__(self, num_queries: int):
        super().__init__()
        self.num_queries = num_queries

    def forward(self, class_logits: Tensor, tokens: MultiLevelTokens) -> Tensor:
        """Indices ``[B, min(Q, S)]`` of the selected tokens, best first."""
        del tokens
        k = min(self.num_queries, class_logits.shape[1])
        return class_logits.max(-1)[0].topk(k, dim=1)[1]
