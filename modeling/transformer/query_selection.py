"""Choosing which encoder tokens become the decoder's queries (two-stage query selection)."""

from __future__ import annotations

from torch import Tensor, nn

from .multi_level import MultiLevelTokens

__all__ = ["TopKQuerySelector", "gather_proposals", "topk_proposal_index"]


def topk_proposal_index(class_logits: Tensor, k: int) -> Tensor:
    """Indices ``[B, min(k, S)]`` of the tokens with the highest best-class logit ``[B, S, C]``, best first."""
    return class_logits.max(-1)[0].topk(min(k, class_logits.shape[1]), dim=1)[1]


def gather_proposals(logits: Tensor, boxes: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """The selected proposals: ``logits [B, S, C]`` and ``boxes [B, S, 4]`` at ``index [B, K]``."""
    index = index.unsqueeze(-1)
    return logits.gather(1, index.expand(-1, -1, logits.shape[-1])), boxes.gather(1, index.expand(-1, -1, 4))


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
        return topk_proposal_index(class_logits, self.num_queries)
