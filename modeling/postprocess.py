"""DETR post-processing: the top-k (query, class) pairs of each image as detections."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from modeling.box_ops import box_cxcywh_to_xyxy

__all__ = ["topk_detections"]


@torch.no_grad()
def topk_detections(
    logits: Tensor, boxes: Tensor, output_sizes: Sequence[tuple[int, int]] | Tensor, num_detections: int = 100
) -> list[dict[str, Tensor]]:
    """The ``num_detections`` highest sigmoid scores over all (query, class) pairs of each image.

    A query may appear several times with different classes. Boxes are scaled from normalised coordinates to
    ``output_sizes`` pixels and not clipped (as the official ``PostProcess``). Traceable (the ONNX export uses it
    with the image size as a tensor).

    Args:
        logits: ``[B, Q, C]`` class logits.
        boxes: ``[B, Q, 4]`` normalised cxcywh boxes.
        output_sizes: per image, ``(height, width)`` of the image the boxes are reported in (or a ``[B, 2]``
            tensor of them).
        num_detections: detections per image (at most ``Q * C``).

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
    return [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in zip(corners, scores, labels)]
