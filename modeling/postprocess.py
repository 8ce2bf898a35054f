"""DETR post-processing: the top-k (query, class) pairs of each image as detections, optionally without
duplicates (non-maximum suppression, the official ``PostProcess``'s ``nms_iou_threshold``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import nms

from modeling.box_ops import box_cxcywh_to_xyxy

__all__ = ["check_nms_iou_threshold", "topk_detections"]


def check_nms_iou_threshold(value: float | None, name: str = "nms_iou_threshold") -> float | None:
    """``value`` if it is ``None`` (no suppression) or an IoU in ``(0, 1]``; otherwise a ``ValueError`` naming
    ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(
            f"{name} must be None (keep every top-k detection) or an IoU in (0, 1], such as 0.7; got {value!r}"
        )
    return float(value)


@torch.no_grad()
def topk_detections(
    logits: Tensor,
    boxes: Tensor,
    output_sizes: Sequence[tuple[int, int]] | Tensor,
    num_detections: int = 100,
    nms_iou_threshold: float | None = None,
) -> list[dict[str, Tensor]]:
    """The ``num_detections`` highest sigmoid scores over all (query, class) pairs of each image.

    A query may appear several times with different classes. Boxes are scaled from normalised coordinates to
    ``output_sizes`` pixels and not clipped (as the official ``PostProcess``). Traceable (the ONNX export uses it
    with the image size as a tensor; with ``nms_iou_threshold`` the graph holds an ONNX ``NonMaxSuppression``).

    With ``nms_iou_threshold``, a detection is dropped when a higher-scoring one of the same image overlaps it
    with an IoU above the threshold, whatever the two labels (class-agnostic, as the official option): a DETR
    trained briefly, or with few decoder layers, has not yet learnt to suppress its own duplicate queries, and
    these rank as false positives. The kept detections stay in score order; an image then has fewer than
    ``num_detections``.

    Args:
        logits: ``[B, Q, C]`` class logits.
        boxes: ``[B, Q, 4]`` normalised cxcywh boxes.
        output_sizes: per image, ``(height, width)`` of the image the boxes are reported in (or a ``[B, 2]``
            tensor of them).
        num_detections: detections per image (at most ``Q * C``).
        nms_iou_threshold: ``None`` (keep all) or an IoU in ``(0, 1]``.

    Returns:
        per image, ``{"boxes": [K, 4] xyxy pixels, "scores": [K], "labels": [K] int64 in [0, C)}``.
    """
    batch, _, num_classes = logits.shape
    if not torch.jit.is_tracing() and len(output_sizes) != batch:
        raise ValueError(f"topk_detections: {len(output_sizes)} output sizes for a batch of {batch}")
    k = min(num_detections, logits.shape[1] * num_classes)
    scores, index = logits.sigmoid().view(batch, -1).topk(k, dim=1)
    query_index = torch.div(index, num_classes, rounding_mode="trunc")
    labels = index % num_classes
    corners = box_cxcywh_to_xyxy(boxes).gather(1, query_index.unsqueeze(-1).repeat(1, 1, 4))
    sizes = torch.as_tensor(output_sizes, dtype=corners.dtype, device=corners.device)
    scale = torch.stack([sizes[:, 1], sizes[:, 0], sizes[:, 1], sizes[:, 0]], dim=1)
    corners = corners * scale[:, None, :]
    detections = [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in zip(corners, scores, labels)]
    if check_nms_iou_threshold(nms_iou_threshold) is not None:
        dtype = torch.promote_types(corners.dtype, torch.float32)  # half precision -> float32; float64 stays
        for detection in detections:
            # nms returns the kept indices by decreasing score; sorting them keeps the top-k order on ties
            boxes_, scores_ = detection["boxes"].to(dtype), detection["scores"].to(dtype)
            keep = nms(boxes_, scores_, nms_iou_threshold).sort().values
            for key in ("boxes", "scores", "labels"):
                detection[key] = detection[key][keep]
    return detections
