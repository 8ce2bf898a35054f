"""An export-friendly inference wrapper of the two-stage DETRs (Salience DETR, Relation DETR / LP-DETR).

:class:`ExportableDetector` turns one image tensor into fixed-size detection tensors with traceable ops only, so
that ``torch.onnx.export`` can trace it (``scripts/export_onnx.py``):

* input ``image``: uint8 ``[1, 3, H, W]``, RGB, 0..255, already resized by the caller (the model's test-time
  resize is *not* part of the graph, exactly as ``image`` of the model-input dict), ``H, W`` at most the canvas
  (the graph cannot raise: ONNX ``Pad`` with negative pads would crop a larger image);
* preprocessing in the graph: ``(image / 255 - mean) / std``, zero padding bottom/right to the fixed canvas,
  the padding mask built from ``H``/``W`` (ONNX ``Shape``) by comparisons;
* outputs: ``scores`` ``[1, K]`` (sigmoid), ``labels`` ``[1, K]`` int64 in ``0..C-1``, ``boxes`` ``[1, K, 4]``
  xyxy in pixels of the input image, ``K = min(num_detections, Q * C)`` (fewer, and varying per image, when the
  model has a ``nms_iou_threshold``: the graph then ends in an ONNX ``NonMaxSuppression``); with ``raw_outputs``
  also the last decoder layer's ``pred_logits`` ``[1, Q, C]`` and ``pred_boxes`` ``[1, Q, 4]`` (normalised cxcywh).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modeling.layers import module_attributes, reference_kernels
from modeling.postprocess import topk_detections
from modeling.preprocess import ImageBatch

__all__ = [
    "ExportableDetector",
    "OUTPUT_NAMES",
    "RAW_OUTPUT_NAMES",
    "static_token_budget",
]

OUTPUT_NAMES = ("scores", "labels", "boxes")
RAW_OUTPUT_NAMES = ("pred_logits", "pred_boxes")


class ExportableDetector(nn.Module):
    """Image tensor in, top-k detections out, for a ``TwoStageDETR`` (or variant) in eval mode.

    The image is zero-padded bottom/right to a fixed ``canvas`` (a multiple of ``size_divisibility``), so every
    feature map, token count and ``topk`` inside the transformer has a static size while the image's own size
    only enters through the padding mask: one graph serves every image up to the canvas size, and its outputs
    equal the eager model's on a batch padded to the canvas (what batched evaluation does), up to float noise and
    the Salience tie described in ``projects/salience_detr/modeling/token_filter.py``. Modules whose token count
    depends on the image size run with their ``static_budget`` flag set (:func:`static_token_budget`).

    Args:
        model: the detector; its ``pixel_mean``/``pixel_std`` buffers, ``size_divisibility``, ``num_detections``
            and ``run`` are used.
        canvas: ``(height, width)`` every image is padded to; rounded up to a multiple of ``size_divisibility``.
        raw_outputs: also return the last decoder layer's logits and boxes.
    """

    def __init__(self, model: nn.Module, canvas: tuple[int, int], raw_outputs: bool = False):
        super().__init__()
        self.model = model
        div = max(int(model.size_divisibility), 1)
        self.canvas = tuple(-(-int(side) // div) * div for side in canvas)
        self.raw_outputs = raw_outputs

    def preprocess(self, image: Tensor) -> tuple[ImageBatch, Tensor]:
        """Normalised ``[1, 3, Hc, Wc]`` canvas, its ``[1, Hc, Wc]`` padding mask, and the image size ``[2]``."""
        if not torch.jit.is_tracing():
            if image.dim() != 4 or image.shape[:2] != (1, 3) or image.dtype != torch.uint8:
                raise ValueError(f"image must be uint8 [1, 3, H, W], got {image.dtype} {tuple(image.shape)}")
            if image.shape[-2] > self.canvas[0] or image.shape[-1] > self.canvas[1]:
                raise ValueError(f"image {tuple(image.shape[-2:])} is larger than the export canvas {self.canvas}")
        size = torch._shape_as_tensor(image)[2:]  # traced as ONNX Shape: the graph stays size-generic
        mean, std = self.model.pixel_mean, self.model.pixel_std
        images = (image.to(mean.dtype) - mean * 255.0) / (std * 255.0)
        canvas_h, canvas_w = self.canvas
        images = F.pad(images, (0, canvas_w - image.shape[-1], 0, canvas_h - image.shape[-2]))
        rows = torch.arange(canvas_h, device=images.device)[:, None] >= size[0]
        cols = torch.arange(canvas_w, device=images.device)[None, :] >= size[1]
        return ImageBatch(images, [self.canvas], (rows | cols)[None]), size

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        """``(scores, labels, boxes[, pred_logits, pred_boxes])``; see the module docstring."""
        with static_token_budget(self.model), reference_kernels(self.model):
            return self._detect(image)

    @torch.no_grad()
    def reference(self, image: Tensor) -> tuple[Tensor, ...]:
        """The same outputs from the eager model with its dynamic token budget (for checking the export)."""
        return self._detect(image)

    def _detect(self, image: Tensor) -> tuple[Tensor, ...]:
        batch, size = self.preprocess(image)
        output = self.model.run(batch)
        logits, boxes = output.dec_logits[-1], output.dec_boxes[-1]
        # boxes are normalised over the image (valid ratios), as in ``TwoStageDETR.inference``
        nms_iou_threshold = getattr(self.model, "nms_iou_threshold", None)
        detection = topk_detections(logits, boxes, size[None], int(self.model.num_detections), nms_iou_threshold)[0]
        detections = tuple(detection[key][None] for key in OUTPUT_NAMES)
        if self.raw_outputs:
            return detections + (logits, boxes)
        return detections


def static_token_budget(model: nn.Module) -> contextlib.AbstractContextManager[list[nn.Module]]:
    """Within the ``with`` block, every module of ``model`` with a ``static_budget`` flag has it set."""
    return module_attributes(model, "static_budget", True)
