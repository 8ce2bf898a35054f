"""One-to-one Hungarian assignment of DETR predictions to ground-truth objects."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from modeling.box_ops import box_cxcywh_to_xyxy, generalized_box_iou

__all__ = ["HungarianMatcher"]

_LOG_EPS = 1e-6


def _index_tensor(indices, device: torch.device) -> Tensor:
    """An index array from scipy as an int64 tensor ``[K]`` on ``device``."""
    return torch.as_tensor(indices, dtype=torch.int64, device=device)


class HungarianMatcher(nn.Module):
    """Matches predictions to targets by minimising a weighted sum of classification, L1 and GIoU costs.

    The cost of assigning prediction ``q`` to target ``t`` with class ``c_t`` is::

        cost_bbox * |box_q - box_t|_1 + cost_class * (pos(p_qc) - neg(p_qc)) - cost_giou * GIoU(box_q, box_t)

    with ``p = sigmoid(logit)``, ``pos(p) = -alpha * (1 - p)**gamma * log(p + 1e-6)`` and
    ``neg(p) = -(1 - alpha) * p**gamma * log(1 - p + 1e-6)`` (the focal-loss gain of predicting the class).
    Boxes are normalised ``(cx, cy, w, h)``; the L1 cost is taken in that format.

    Args:
        cost_class: weight of the classification cost.
        cost_bbox: weight of the L1 box cost.
        cost_giou: weight of the GIoU cost.
        focal_alpha: alpha of the focal classification cost.
        focal_gamma: gamma of the focal classification cost.
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: cost_class, cost_bbox and cost_giou cannot all be 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def class_cost(self, pred_logits: Tensor, gt_labels: Tensor) -> Tensor:
        """Focal classification cost.

        Args:
            pred_logits: ``[Q, C]`` logits of one image.
            gt_labels: ``[T]`` int64 class indices.

        Returns:
            ``[Q, T]`` cost, lower for a more confident prediction of the target's class.
        """
        prob = pred_logits.sigmoid()
        alpha, gamma = self.focal_alpha, self.focal_gamma
        negative = (1 - alpha) * prob**gamma * -(1 - prob + _LOG_EPS).log()
        positive = alpha * (1 - prob) ** gamma * -(prob + _LOG_EPS).log()
        return positive[:, gt_labels] - negative[:, gt_labels]

    @torch.no_grad()
    def cost_matrix(self, pred_logits: Tensor, pred_boxes: Tensor, gt_labels: Tensor, gt_boxes: Tensor) -> Tensor:
        """Total assignment cost of one image.

        Args:
            pred_logits: ``[Q, C]`` logits.
            pred_boxes: ``[Q, 4]`` normalised ``(cx, cy, w, h)`` boxes.
            gt_labels: ``[T]`` int64 class indices.
            gt_boxes: ``[T, 4]`` normalised ``(cx, cy, w, h)`` boxes.

        Returns:
            ``[Q, T]`` cost matrix.
        """
        bbox = torch.cdist(pred_boxes, gt_boxes, p=1)
        giou = generalized_box_iou(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(gt_boxes))
        cls = self.class_cost(pred_logits, gt_labels)
        return self.cost_bbox * bbox + self.cost_class * cls + self.cost_giou * -giou

    @torch.no_grad()
    def match_single(
        self, pred_logits: Tensor, pred_boxes: Tensor, gt_labels: Tensor, gt_boxes: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Optimal one-to-one assignment for one image.

        Args:
            pred_logits: ``[Q, C]`` logits.
            pred_boxes: ``[Q, 4]`` normalised ``(cx, cy, w, h)`` boxes.
            gt_labels: ``[T]`` int64 class indices (``T`` may be 0).
            gt_boxes: ``[T, 4]`` normalised ``(cx, cy, w, h)`` boxes.

        Returns:
            ``(pred_idx, tgt_idx)``: int64 tensors ``[min(Q, T)]`` on the predictions' device, sorted by
            ``pred_idx``; prediction ``pred_idx[k]`` is assigned to target ``tgt_idx[k]``.
        """
        device = pred_logits.device
        if gt_labels.numel() == 0:
            empty = torch.zeros(0, dtype=torch.int64, device=device)
            return empty, empty.clone()
        cost = self.cost_matrix(pred_logits, pred_boxes, gt_labels, gt_boxes)
        # solved in the predictions' dtype, at least float32 (float64 for a float64 model)
        cost = cost.to(torch.promote_types(cost.dtype, torch.float32)).cpu()
        if not bool(torch.isfinite(cost).all()):
            raise ValueError("HungarianMatcher: NaN/inf in the cost matrix (non-finite predicted logits or boxes)")
        pred_idx, tgt_idx = linear_sum_assignment(cost.numpy())
        return _index_tensor(pred_idx, device), _index_tensor(tgt_idx, device)

    @torch.no_grad()
    def forward(self, pred_logits: Tensor, pred_boxes: Tensor, targets: list[dict[str, Tensor]]) -> list[tuple]:
        """Assignment of every image of a batch.

        Args:
            pred_logits: ``[B, Q, C]`` logits.
            pred_boxes: ``[B, Q, 4]`` normalised ``(cx, cy, w, h)`` boxes.
            targets: ``B`` dicts with ``labels`` (``[T_b]`` int64) and ``boxes`` (``[T_b, 4]`` normalised cxcywh).

        Returns:
            ``B`` pairs ``(pred_idx, tgt_idx)`` of int64 tensors ``[min(Q, T_b)]``, see ``match_single``.
        """
        if len(targets) != pred_logits.shape[0]:
            raise ValueError(f"HungarianMatcher: {len(targets)} targets for a batch of {pred_logits.shape[0]} images")
        return [
            self.match_single(logits, boxes, target["labels"], target["boxes"])
            for logits, boxes, target in zip(pred_logits, pred_boxes, targets)
        ]
