"""Box conversions, areas and overlaps shared by the matcher, the criterion and the post-processing.

Formats (the last dimension always has size 4):

* ``xyxy``: corners ``(x1, y1, x2, y2)``.
* ``cxcywh``: centre and size ``(cx, cy, w, h)``; DETR predictions and targets use it, normalised to [0, 1].
* ``xywh``: top-left corner and size ``(x, y, w, h)``; COCO annotations use it, in pixels.

Every function accepts any number of leading batch dimensions. The *pairwise* functions (``box_iou``,
``generalized_box_iou``) compare every box of ``boxes1 [..., N, 4]`` with every box of ``boxes2 [..., M, 4]``
and return ``[..., N, M]``; the *paired* functions (``paired_box_iou``, ``paired_generalized_box_iou``) compare
``boxes1[..., i]`` with ``boxes2[..., i]`` only and return ``[...]``. Both kinds use the same element-wise
arithmetic as ``torchvision.ops``, so a paired value equals the diagonal of the pairwise matrix bit for bit.
Overlaps are computed in float32 at least (half precision inputs are upcast) to avoid overflow.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "INVERSE_SIGMOID_EPS",
    "inverse_sigmoid",
    "box_area",
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_xywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_xyxy_to_xywh",
    "generalized_box_iou",
    "paired_box_iou",
    "paired_generalized_box_iou",
]


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """Converts centre-size boxes to corner boxes.

    Args:
        boxes: ``[..., 4]`` boxes ``(cx, cy, w, h)``.

    Returns:
        ``[..., 4]`` boxes ``(cx - w/2, cy - h/2, cx + w/2, cy + h/2)``.
    """
    centre, size = boxes.split(2, dim=-1)
    half = 0.5 * size
    return torch.cat((centre - half, centre + half), dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """Converts corner boxes to centre-size boxes.

    Args:
        boxes: ``[..., 4]`` boxes ``(x1, y1, x2, y2)``.

    Returns:
        ``[..., 4]`` boxes ``((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)``.
    """
    top_left, bottom_right = boxes.split(2, dim=-1)
    return torch.cat(((top_left + bottom_right) / 2, bottom_right - top_left), dim=-1)


def box_xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """Converts corner-size boxes (COCO) to corner boxes.

    Args:
        boxes: ``[..., 4]`` boxes ``(x, y, w, h)``.

    Returns:
        ``[..., 4]`` boxes ``(x, y, x + w, y + h)``.
    """
    top_left, size = boxes.split(2, dim=-1)
    return torch.cat((top_left, top_left + size), dim=-1)


def box_xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """Converts corner boxes to corner-size boxes (COCO).

    Args:
        boxes: ``[..., 4]`` boxes ``(x1, y1, x2, y2)``.

    Returns:
        ``[..., 4]`` boxes ``(x1, y1, x2 - x1, y2 - y1)``.
    """
    top_left, bottom_right = boxes.split(2, dim=-1)
    return torch.cat((top_left, bottom_right - top_left), dim=-1)


def _at_least_float32(tensor: Tensor) -> Tensor:
    """``tensor`` as float32 when it is a half-precision or integer tensor, unchanged otherwise."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def box_area(boxes: Tensor) -> Tensor:
    """Area of corner boxes.

    Args:
        boxes: ``[..., 4]`` boxes ``(x1, y1, x2, y2)``, with ``x2 >= x1`` and ``y2 >= y1``.

    Returns:
        ``[...]`` areas ``(x2 - x1) * (y2 - y1)``, at least float32.
    """
    boxes = _at_least_float32(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _span_area(low: Tensor, high: Tensor) -> Tensor:
    """Area of the rectangle spanned by corners ``low [..., 2]`` and ``high [..., 2]``, 0 when empty: ``[...]``."""
    size = _at_least_float32(high - low).clamp(min=0)
    return size[..., 0] * size[..., 1]


def _overlaps(boxes1: Tensor, boxes2: Tensor, pairwise: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Intersection, union and enclosing-box areas of two sets of corner boxes.

    Args:
        boxes1: ``[..., N, 4]`` corner boxes.
        boxes2: ``[..., M, 4]`` corner boxes (``M == N`` when not ``pairwise``).
        pairwise: compare every box of ``boxes1`` with every box of ``boxes2`` (``[..., N, M]`` outputs), or
            ``boxes1[..., i]`` with ``boxes2[..., i]`` only (``[..., N]`` outputs).

    Returns:
        ``(intersection, union, enclosing)`` areas, each ``[..., N, M]`` or ``[..., N]``.
    """
    area1, area2 = box_area(boxes1), box_area(boxes2)
    if pairwise:
        boxes1, boxes2 = boxes1[..., :, None, :], boxes2[..., None, :, :]
        area1, area2 = area1[..., :, None], area2[..., None, :]
    corners1_low, corners1_high = boxes1[..., :2], boxes1[..., 2:]
    corners2_low, corners2_high = boxes2[..., :2], boxes2[..., 2:]
    intersection = _span_area(torch.max(corners1_low, corners2_low), torch.min(corners1_high, corners2_high))
    union = area1 + area2 - intersection
    enclosing = _span_area(torch.min(corners1_low, corners2_low), torch.max(corners1_high, corners2_high))
    return intersection, union, enclosing


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection over union (equal to ``torchvision.ops.box_iou``).

    Args:
        boxes1: ``[..., N, 4]`` corner boxes ``(x1, y1, x2, y2)``.
        boxes2: ``[..., M, 4]`` corner boxes.

    Returns:
        ``[..., N, M]`` IoU of every pair.
    """
    intersection, union, _ = _overlaps(boxes1, boxes2, pairwise=True)
    return intersection / union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalized IoU, ``IoU - (enclosing - union) / enclosing`` (equal to torchvision's).

    Args:
        boxes1: ``[..., N, 4]`` corner boxes ``(x1, y1, x2, y2)``.
        boxes2: ``[..., M, 4]`` corner boxes.

    Returns:
        ``[..., N, M]`` generalized IoU of every pair, in ``[-1, 1]``.
    """
    intersection, union, enclosing = _overlaps(boxes1, boxes2, pairwise=True)
    return intersection / union - (enclosing - union) / enclosing


def paired_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of corresponding boxes (the diagonal of ``box_iou`` without computing the whole matrix).

    Args:
        boxes1: ``[..., N, 4]`` corner boxes ``(x1, y1, x2, y2)``.
        boxes2: ``[..., N, 4]`` corner boxes.

    Returns:
        ``[..., N]`` IoU of ``boxes1[..., i]`` and ``boxes2[..., i]``.
    """
    intersection, union, _ = _overlaps(boxes1, boxes2, pairwise=False)
    return intersection / union


def paired_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalized IoU of corresponding boxes (the diagonal of ``generalized_box_iou``).

    Args:
        boxes1: ``[..., N, 4]`` corner boxes ``(x1, y1, x2, y2)``.
        boxes2: ``[..., N, 4]`` corner boxes.

    Returns:
        ``[..., N]`` generalized IoU of ``boxes1[..., i]`` and ``boxes2[..., i]``.
    """
    intersection, union, enclosing = _overlaps(boxes1, boxes2, pairwise=False)
    return intersection / union - (enclosing - union) / enclosing


INVERSE_SIGMOID_EPS = 1e-3


def inverse_sigmoid(x: Tensor, eps: float = INVERSE_SIGMOID_EPS) -> Tensor:
    """``log(x / (1 - x))`` of ``x`` clamped to ``[0, 1]``; numerator and denominator clamped to at least ``eps``.

    Maps normalised box coordinates to the unbounded space where DETR decoders add their box deltas.
    """
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
