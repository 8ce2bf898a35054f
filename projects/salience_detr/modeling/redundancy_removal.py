"""Redundancy removal of two-stage queries (Salience DETR): NMS on unit boxes around the selected tokens.

The ``candidate_factor * num_queries`` best tokens become boxes ``(x - 1, y - 1, x + 1, y + 1)`` in the cell
units of their level; NMS (IoU ``iou_threshold``) runs separately per image and per level, so neighbouring cells
of one level suppress each other while different levels never do. The survivors, best first, are the queries.
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor, nn

from modeling.transformer import MultiLevelTokens

__all__ = ["RedundancyRemovalSelector", "unit_boxes"]


def unit_boxes(index: Tensor, tokens: MultiLevelTokens, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Level and unit box of tokens.

    Args:
        index: ``[N]`` token indices in ``S``.
        tokens: the flattened inputs (level shapes and starts).
        dtype: floating dtype of the boxes (their integer coordinates are exact in float32 and float64).

    Returns:
        ``(level [N] int64, boxes [N, 4] of dtype, xyxy in cells of that level)``.
    """
    starts = tokens.level_start_index
    level = torch.bucketize(index, starts, right=True) - 1
    cell = index - starts[level]
    width = tokens.spatial_shapes[level, 1]
    x = (cell % width).to(dtype)
    y = torch.div(cell, width, rounding_mode="trunc").to(dtype)
    return level, torch.stack([x - 1.0, y - 1.0, x + 1.0, y + 1.0], -1)


class RedundancyRemovalSelector(nn.Module):
    """Query selector with NMS on the candidates' unit boxes.

    Args:
        num_queries: queries ``Q`` to select.
        candidate_factor: candidates are the ``candidate_factor * Q`` best tokens.
        iou_threshold: NMS threshold.
        level_wise: run NMS per level (the paper); False lets levels suppress each other too.

    When fewer than ``Q`` candidates survive in some image, the best suppressed candidates fill the gap (the
    official implementation fails in that case).
    """

    def __init__(
        self, num_queries: int, candidate_factor: int = 4, iou_threshold: float = 0.3, level_wise: bool = True
    ):
        super().__init__()
        self.num_queries = num_queries
        self.candidate_factor = candidate_factor
        self.iou_threshold = iou_threshold
        self.level_wise = level_wise

    @torch.no_grad()
    def forward(self, class_logits: Tensor, tokens: MultiLevelTokens) -> Tensor:
        """Indices ``[B, min(Q, candidates)]`` of the selected tokens, best first.

        Args:
            class_logits: ``[B, S, C]`` two-stage class logits.
            tokens: the flattened inputs.
        """
        batch, num_tokens, _ = class_logits.shape
        num_candidates = min(self.num_queries * self.candidate_factor, num_tokens)
        scores, index = class_logits.max(-1)[0].topk(num_candidates, dim=1)
        keep = self._nms_keep(scores.flatten(), index.flatten(), tokens, batch)
        keep = keep.view(batch, num_candidates)
        # survivors first (in score order), then the suppressed candidates (in score order)
        rank = torch.arange(num_candidates, device=index.device).expand(batch, -1) + (~keep) * num_candidates
        order = rank.argsort(dim=1)[:, : min(self.num_queries, num_candidates)]
        return index.gather(1, order)

    def _nms_keep(self, scores: Tensor, index: Tensor, tokens: MultiLevelTokens, batch: int) -> Tensor:
        """Bool ``[B * K]``: which flattened candidates survive NMS within their image (and level)."""
        # NMS in the scores' dtype, at least float32 (torchvision's NMS takes float32 and float64): a float64 model
        # ranks its candidates without float32 ties
        dtype = torch.promote_types(scores.dtype, torch.float32)
        level, boxes = unit_boxes(index, tokens, dtype)
        image = torch.arange(batch, device=index.device).repeat_interleave(index.numel() // batch)
        num_levels = tokens.spatial_shapes.shape[0]
        groups = level + num_levels * image if self.level_wise else image
        kept = torchvision.ops.batched_nms(boxes, scores.to(dtype), groups, self.iou_threshold)
        keep = torch.zeros_like(index, dtype=torch.bool)
        keep[kept] = True
        return keep
