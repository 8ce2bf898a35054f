"""CenterNetLite: a compact single-level "Objects as Points" detector that trains from scratch on a CPU.

It follows the project's model contract (see ``DESIGN.md``): ``forward`` takes a list of input dicts and returns a
dict of weighted losses in training, or one ``{boxes, scores, labels}`` dict per image (original-image pixels) in
inference. It exists so that the engine and the evaluator can be checked end to end with a real, fast detector.

Formulation (per object, at output stride ``s``, all lengths in feature cells unless said otherwise):

* centre ``c = box_centre / s``, centre cell ``q = floor(c)``; offset target ``c - q``; size target
  ``log(box_wh / s)`` (regressed in log space, so a 4 px spot and a 300 px plate have comparable losses);
* heatmap target of its class: an axis-aligned gaussian ``exp(-dx^2 / 2 sx^2 - dy^2 / 2 sy^2)`` around ``q`` whose
  spreads follow the box, ``sx = max(gaussian_alpha * w / 6, min_sigma)`` (likewise ``sy``), merged over objects by
  maximum; padding cells are left out of the loss;
* losses: penalty-reduced focal loss (alpha 2, beta 4) on the heatmap and L1 on size and offset at the centre cells,
  each normalised by ``max(1, number of objects in the batch)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modeling.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    batch_images,
    pixel_stat_buffer,
    rescale_boxes,
    targets_from_inputs,
)

__all__ = ["CenterNetLite", "TinyFPNBackbone"]

_PRIOR_BIAS = -2.19  # sigmoid(-2.19) ~= 0.1, the CenterNet heatmap prior
_MAX_LOG_SIZE = 8.0  # clamp of the predicted log size (in cells) before exp at inference
_INIT_BOX_SIZE = 32.0  # initial predicted box side, in input pixels


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3x3 convolution (no bias), BatchNorm and ReLU; ``stride`` 2 halves the resolution."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TinyFPNBackbone(nn.Module):
    """A stem and four stride-2 conv stages (strides 2..32), merged back to stride 4 by a top-down path.

    Each stage is two conv-BN-ReLU (the first with stride 2); the last stage adds a dilated one for context.
    The top-down path projects each stage with a 1x1 conv, adds the upsampled coarser level and fuses the sum
    with a conv-BN-ReLU (FPN-like, but returning only the finest, stride-4 level).

    Args:
        width: channels of the stem (stride 2); the stages at strides 4, 8, 16, 32 have
            ``(2, 4, 8, 8) * width`` channels.
        out_channels: channels of the top-down path and of the returned stride-4 feature map.

    Attributes:
        out_channels (int): channels of the output.
        stride (int): output stride, 4.
    """

    def __init__(self, width: int = 16, out_channels: int = 32) -> None:
        super().__init__()
        chans = [width, 2 * width, 4 * width, 8 * width, 8 * width]
        self.stem = conv_bn_relu(3, chans[0], stride=2)
        self.stages = nn.ModuleList(
            nn.Sequential(conv_bn_relu(chans[i], chans[i + 1], stride=2), conv_bn_relu(chans[i + 1], chans[i + 1]))
            for i in range(4)
        )
        self.stages[-1].append(conv_bn_relu(chans[-1], chans[-1], dilation=2))
        self.laterals = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in chans[1:])
        self.fuse = nn.ModuleList(conv_bn_relu(out_channels, out_channels) for _ in chans[1:-1])
        self.out_channels = out_channels
        self.stride = 4

    def forward(self, images: Tensor) -> Tensor:
        """Features of a batch.

        Args:
            images: float ``[B, 3, H, W]``.

        Returns:
            float ``[B, out_channels, ceil(H / 4), ceil(W / 4)]`` (for H, W divisible by 32: exactly H/4, W/4).
        """
        x = self.stem(images)
        levels = []
        for stage in self.stages:
            x = stage(x)
            levels.append(x)
        top = self.laterals[-1](levels[-1])
        for lateral, fuse, feature in zip(self.laterals[-2::-1], self.fuse[::-1], levels[-2::-1]):
            top = fuse(lateral(feature) + F.interpolate(top, size=feature.shape[-2:], mode="nearest"))
        return top


def _head(in_channels: int, hidden: int, out_channels: int) -> nn.Sequential:
    """3x3 conv + ReLU + 1x1 conv prediction head."""
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hidden, out_channels, 1)
    )


def _init_weights(module: nn.Module) -> None:
    """Kaiming init for convolutions, identity for BatchNorm."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def penalty_reduced_focal_loss(logits: Tensor, target: Tensor, pos: Tensor, valid: Tensor) -> Tensor:
    """CornerNet/CenterNet focal loss (alpha 2, beta 4), summed (not normalised).

    Args:
        logits: float ``[B, C, H, W]`` heatmap logits.
        target: float ``[B, C, H, W]`` gaussian heatmap in [0, 1].
        pos: bool ``[B, C, H, W]``, ``True`` at object centres.
        valid: bool ``[B, 1, H, W]``, ``False`` on padding cells (left out of the loss).

    Returns:
        Scalar: sum of the positive and negative terms.
    """
    prob = logits.sigmoid()
    pos_term = F.logsigmoid(logits) * (1 - prob).pow(2) * pos
    neg_weight = (1 - target).pow(4) * prob.pow(2) * (valid & ~pos)
    neg_term = F.logsigmoid(-logits) * neg_weight
    return -(pos_term.sum() + neg_term.sum())


class CenterNetLite(nn.Module):
    """Single-level CenterNet ("Objects as Points") detector following the project's model contract.

    Args:
        num_classes: number of classes C (labels 0..C-1).
        backbone: module mapping normalised images ``[B, 3, H, W]`` to one feature map
            ``[B, backbone.out_channels, H / backbone.stride, W / backbone.stride]``; it must have the attributes
            ``out_channels`` and ``stride``. ``None`` builds a :class:`TinyFPNBackbone` (stride 4).
        width: ``width`` of the default backbone (ignored when ``backbone`` is given).
        feature_channels: ``out_channels`` of the default backbone (ignored when ``backbone`` is given).
        head_channels: hidden channels of the heatmap and box heads.
        pixel_mean: RGB mean in [0, 1] units.
        pixel_std: RGB std in [0, 1] units.
        size_divisibility: pad batches to a multiple of this (32 for the default backbone).
        loss_heatmap_weight: weight of the focal heatmap loss.
        loss_size_weight: weight of the L1 loss on log box sizes.
        loss_offset_weight: weight of the L1 loss on sub-cell centre offsets.
        gaussian_alpha: heatmap gaussian spread relative to box size (``sigma = alpha * size / 6``).
        min_sigma: smallest gaussian spread, in feature cells.
        max_detections: detections kept per image (top-k over classes and locations).
        score_threshold: detections with a lower score are dropped at inference.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: nn.Module | None = None,
        width: int = 16,
        feature_channels: int = 32,
        head_channels: int = 32,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
        size_divisibility: int = 32,
        loss_heatmap_weight: float = 1.0,
        loss_size_weight: float = 1.0,
        loss_offset_weight: float = 1.0,
        gaussian_alpha: float = 0.54,
        min_sigma: float = 0.5,
        max_detections: int = 100,
        score_threshold: float = 0.05,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.backbone = backbone if backbone is not None else TinyFPNBackbone(width, feature_channels)
        for attr in ("out_channels", "stride"):
            if not hasattr(self.backbone, attr):
                raise AttributeError(f"backbone {type(self.backbone).__name__} needs an attribute {attr!r}")
        self.heatmap_head = _head(self.backbone.out_channels, head_channels, num_classes)
        self.box_head = _head(self.backbone.out_channels, head_channels, 4)  # log w, log h, offset x, offset y
        self._init_heads(backbone is None)
        self.register_buffer("pixel_mean", pixel_stat_buffer(pixel_mean, "pixel_mean"), persistent=False)
        self.register_buffer("pixel_std", pixel_stat_buffer(pixel_std, "pixel_std", positive=True), persistent=False)
        self.num_classes = num_classes
        self.stride = int(self.backbone.stride)
        self.size_divisibility = size_divisibility
        self.loss_weights = {"heatmap": loss_heatmap_weight, "size": loss_size_weight, "offset": loss_offset_weight}
        self.gaussian_alpha = gaussian_alpha
        self.min_sigma = min_sigma
        self.max_detections = max_detections
        self.score_threshold = score_threshold

    def _init_heads(self, init_backbone: bool) -> None:
        """Kaiming init (also of the default backbone); heatmap starts at the 0.1 prior, boxes at 32 px."""
        _init_weights(self.heatmap_head)
        _init_weights(self.box_head)
        if init_backbone:
            _init_weights(self.backbone)
        nn.init.normal_(self.heatmap_head[-1].weight, std=0.01)
        nn.init.constant_(self.heatmap_head[-1].bias, _PRIOR_BIAS)
        nn.init.normal_(self.box_head[-1].weight, std=0.001)
        nn.init.constant_(self.box_head[-1].bias[:2], math.log(_INIT_BOX_SIZE / self.backbone.stride))

    @property
    def device(self) -> torch.device:
        """Device of the model (of its ``pixel_mean`` buffer)."""
        return self.pixel_mean.device

    def forward(self, batched_inputs: Sequence[dict[str, Any]]) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Losses in training mode, detections in eval mode.

        Args:
            batched_inputs: one dict per image: ``image`` (uint8 ``[3, H, W]``), ``height``, ``width`` (original
                size), ``image_id``; in training also ``boxes`` (float ``[N, 4]`` xyxy, pixels of ``image``) and
                ``labels`` (int64 ``[N]``).

        Returns:
            Training: ``{"loss_heatmap", "loss_size", "loss_offset"}`` weighted scalar losses.
            Inference: one dict per image with ``boxes`` (float ``[K, 4]`` xyxy, original-image pixels),
            ``scores`` (float ``[K]``, descending) and ``labels`` (int64 ``[K]``), ``K <= max_detections``.
        """
        batch = batch_images(batched_inputs, self.pixel_mean, self.pixel_std, self.size_divisibility)
        targets = targets_from_inputs(batched_inputs, self.device, self.num_classes) if self.training else None
        features = self.backbone(batch.images)
        heatmap_logits = self.heatmap_head(features)
        box_pred = self.box_head(features)
        valid = self._valid_cells(batch.image_sizes, features.shape[-2:])
        if targets is not None:
            return self.losses(heatmap_logits, box_pred, valid, targets, batch.image_sizes)
        detections = self.decode(heatmap_logits, box_pred, valid)
        return self.postprocess(detections, batched_inputs, batch.image_sizes)

    def _valid_cells(self, image_sizes: list[tuple[int, int]], feature_size: Sequence[int]) -> Tensor:
        """Bool ``[B, 1, Hf, Wf]``: ``True`` on feature cells that cover image pixels (not padding)."""
        hf, wf = int(feature_size[0]), int(feature_size[1])
        limits = torch.tensor([[math.ceil(h / self.stride), math.ceil(w / self.stride)] for h, w in image_sizes])
        limits = limits.to(self.device)
        rows = torch.arange(hf, device=self.device)[None, :, None] < limits[:, 0, None, None]
        cols = torch.arange(wf, device=self.device)[None, None, :] < limits[:, 1, None, None]
        return (rows & cols)[:, None]

    # ------------------------------------------------------------------ training
    def _object_targets(self, boxes: Tensor, image_size: tuple[int, int], feature_size: tuple[int, int]) -> dict:
        """Centre cells, offsets, log sizes and gaussian spreads of one image's objects.

        Args:
            boxes: float ``[N, 4]`` xyxy in input-image pixels.
            image_size: ``(h, w)`` of the input image.
            feature_size: ``(Hf, Wf)`` of the feature map.

        Returns:
            dict with ``keep`` (bool ``[N]``, boxes with positive area after clipping), and for the kept ``M``
            objects: ``cells`` (int64 ``[M, 2]`` x, y), ``offsets`` ``[M, 2]``, ``log_sizes`` ``[M, 2]``,
            ``sigmas`` ``[M, 2]`` (x, y; in cells).
        """
        h, w = image_size
        boxes = torch.minimum(boxes.clamp(min=0), boxes.new_tensor([w, h, w, h]))
        sizes = boxes[:, 2:] - boxes[:, :2]
        keep = (sizes > 0).all(dim=1)
        boxes, sizes = boxes[keep], sizes[keep] / self.stride
        centres = (boxes[:, :2] + boxes[:, 2:]) / (2 * self.stride)
        upper = centres.new_tensor([feature_size[1] - 1, feature_size[0] - 1])
        cells = torch.minimum(centres.floor().clamp(min=0), upper)
        return {
            "keep": keep,
            "cells": cells.long(),
            "offsets": centres - cells,
            "log_sizes": sizes.clamp(min=1.0 / self.stride).log(),
            "sigmas": (self.gaussian_alpha * sizes / 6).clamp(min=self.min_sigma),
        }

    def _draw_heatmap(self, objects: dict, labels: Tensor, feature_size: tuple[int, int]) -> Tensor:
        """Class heatmap ``[C, Hf, Wf]``: per-object gaussians (peak exactly 1 at the centre cell), max-merged."""
        hf, wf = feature_size
        heatmap = torch.zeros(self.num_classes, hf, wf, device=self.device)
        if labels.numel() == 0:
            return heatmap
        cells, sigmas = objects["cells"].float(), objects["sigmas"]
        dx = torch.arange(wf, device=self.device)[None, :] - cells[:, :1]  # [M, Wf]
        dy = torch.arange(hf, device=self.device)[None, :] - cells[:, 1:]  # [M, Hf]
        gx = torch.exp(-(dx**2) / (2 * sigmas[:, :1] ** 2))
        gy = torch.exp(-(dy**2) / (2 * sigmas[:, 1:] ** 2))
        gaussians = gy[:, :, None] * gx[:, None, :]  # [M, Hf, Wf]
        index = labels[:, None].expand(-1, hf * wf)
        return (
            heatmap.view(self.num_classes, -1).scatter_reduce_(0, index, gaussians.flatten(1), "amax").view_as(heatmap)
        )

    def _build_targets(self, targets: list[dict[str, Tensor]], image_sizes, feature_size) -> dict[str, Tensor]:
        """Dense heatmap targets and the per-object regression targets of a batch.

        Returns:
            dict with ``heatmap`` ``[B, C, Hf, Wf]``, ``pos`` bool ``[B, C, Hf, Wf]``, ``index`` int64 ``[M, 4]``
            (batch, class, y, x of each object's centre cell), ``log_sizes`` ``[M, 2]``, ``offsets`` ``[M, 2]``.
        """
        heatmaps, index, log_sizes, offsets = [], [], [], []
        for i, (target, image_size) in enumerate(zip(targets, image_sizes)):
            objects = self._object_targets(target["boxes"], image_size, feature_size)
            labels = target["labels"][objects["keep"]]
            heatmaps.append(self._draw_heatmap(objects, labels, feature_size))
            batch_idx = torch.full_like(labels, i)
            index.append(torch.stack([batch_idx, labels, objects["cells"][:, 1], objects["cells"][:, 0]], dim=1))
            log_sizes.append(objects["log_sizes"])
            offsets.append(objects["offsets"])
        heatmap = torch.stack(heatmaps)
        index = torch.cat(index)
        pos = torch.zeros_like(heatmap, dtype=torch.bool)
        pos[index[:, 0], index[:, 1], index[:, 2], index[:, 3]] = True
        heatmap = heatmap.masked_fill(pos, 1.0)
        return {
            "heatmap": heatmap,
            "pos": pos,
            "index": index,
            "log_sizes": torch.cat(log_sizes),
            "offsets": torch.cat(offsets),
        }

    def losses(self, heatmap_logits, box_pred, valid, targets, image_sizes) -> dict[str, Tensor]:
        """Weighted focal heatmap loss and L1 size/offset losses.

        Args:
            heatmap_logits: float ``[B, C, Hf, Wf]``.
            box_pred: float ``[B, 4, Hf, Wf]`` (log w, log h in cells; offset x, y in cells).
            valid: bool ``[B, 1, Hf, Wf]``, ``False`` on padding.
            targets: one dict per image with ``boxes`` ``[N, 4]`` (input-image pixels) and ``labels`` ``[N]``.
            image_sizes: ``(h, w)`` of each input image.

        Returns:
            ``{"loss_heatmap", "loss_size", "loss_offset"}``, each a finite scalar attached to the graph (the box
            losses are 0 when the batch has no objects).
        """
        feature_size = (heatmap_logits.shape[-2], heatmap_logits.shape[-1])
        t = self._build_targets(targets, image_sizes, feature_size)
        num_objects = max(1, t["index"].shape[0])
        heatmap_loss = penalty_reduced_focal_loss(heatmap_logits, t["heatmap"], t["pos"], valid)
        b, _, y, x = t["index"].unbind(dim=1)
        pred = box_pred[b, :, y, x]  # [M, 4]
        size_loss = F.l1_loss(pred[:, :2], t["log_sizes"], reduction="sum")
        offset_loss = F.l1_loss(pred[:, 2:], t["offsets"], reduction="sum")
        return {
            "loss_heatmap": self.loss_weights["heatmap"] * heatmap_loss / num_objects,
            "loss_size": self.loss_weights["size"] * size_loss / num_objects,
            "loss_offset": self.loss_weights["offset"] * offset_loss / num_objects,
        }

    # ----------------------------------------------------------------- inference
    def decode(self, heatmap_logits: Tensor, box_pred: Tensor, valid: Tensor) -> dict[str, Tensor]:
        """Top-k peaks of the heatmap and their boxes.

        Args:
            heatmap_logits: float ``[B, C, Hf, Wf]``.
            box_pred: float ``[B, 4, Hf, Wf]``.
            valid: bool ``[B, 1, Hf, Wf]``, ``False`` on padding (no detections there).

        Returns:
            dict with ``scores`` ``[B, K]`` (descending), ``labels`` int64 ``[B, K]`` and ``boxes`` ``[B, K, 4]``
            xyxy in pixels of the padded input, ``K = min(max_detections, C * Hf * Wf)``.
        """
        batch, num_classes, hf, wf = heatmap_logits.shape
        heat = heatmap_logits.sigmoid() * valid
        peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
        k = min(self.max_detections, num_classes * hf * wf)
        scores, flat = peaks.flatten(1).topk(k, dim=1)
        labels, pixel = flat // (hf * wf), flat % (hf * wf)
        reg = box_pred.flatten(2).gather(2, pixel[:, None, :].expand(-1, 4, -1))  # [B, 4, K]
        cells = torch.stack([pixel % wf, pixel // wf], dim=-1).float()  # [B, K, 2] x, y
        centres = (cells + reg[:, 2:].transpose(1, 2)) * self.stride
        half = reg[:, :2].transpose(1, 2).clamp(max=_MAX_LOG_SIZE).exp() * (self.stride / 2)
        return {"scores": scores, "labels": labels, "boxes": torch.cat([centres - half, centres + half], dim=-1)}

    def postprocess(self, detections: dict[str, Tensor], batched_inputs, image_sizes) -> list[dict[str, Tensor]]:
        """Drops low scores and rescales boxes from each input image to its original ``height`` x ``width``.

        Returns:
            One dict per image: ``boxes`` ``[K, 4]`` (xyxy, clipped to the original image), ``scores`` ``[K]``,
            ``labels`` ``[K]``.
        """
        results = []
        for i, (record, image_size) in enumerate(zip(batched_inputs, image_sizes)):
            keep = detections["scores"][i] > self.score_threshold
            results.append(
                {
                    "boxes": rescale_boxes(detections["boxes"][i][keep], image_size, _original_size(record)),
                    "scores": detections["scores"][i][keep],
                    "labels": detections["labels"][i][keep],
                }
            )
        return results


def _original_size(record: dict[str, Any]) -> tuple[int, int]:
    """``(height, width)`` of the original image of one input dict."""
    for key in ("height", "width"):
        if key not in record:
            raise KeyError(f"input of image_id={record.get('image_id', '<no image_id>')!r} has no {key!r}")
    return int(record["height"]), int(record["width"])
