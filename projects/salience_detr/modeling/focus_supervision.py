"""Focus DETR's discrete, scale-assigned foreground supervision: the baseline of Salience DETR's Table 7.

Focus DETR (Zheng et al., ICCV 2023, "Less is More: Focus Attention for Efficient DETR", Sec. 3.2, foreground
token selector) labels every token of every feature level as foreground (1) or background (0) from the
ground-truth boxes, and trains the per-level foreground logits with a focal loss. Salience DETR (CVPR 2024) keeps
the same assignment but replaces the binary label by a continuous, scale-independent salience (see
``salience_supervision.py``). This module is the binary variant, with the call interface of ``SalienceLoss`` so a
config can swap one for the other under the same loss name and weight.

Assignment (official code: ``huawei-noah/noah-research``, ``Focus-DETR/projects/focus_detr/modeling/
foreground_supervision.py``, ``GenTargets._gen_level_targets``, lines 79-142; the same file ships in
``IDEA-Research/detrex`` ``projects/focus_detr/modeling/``):

* the token centre ``((i + 0.5) * stride_y, (j + 0.5) * stride_x)`` (official: ``k * stride + stride // 2``,
  lines 35-42) is measured against each box (absolute xyxy pixels of the unpadded image) by its four border
  distances ``l, t, r, b``;
* the token is *inside* a box when ``min(l, t, r, b) > 0`` (line 112): the full box counts; the code computes a
  centre-sampling region of radius ``1.5 * stride`` (lines 115-124) but leaves it out of the positive mask
  (line 125, ``# & mask_center``);
* the box is *assigned* to the token's level when ``lo < max(l, t, r, b) <= hi`` (line 113) with ``(lo, hi)``
  the level's limit range, ``((-1, 64), (64, 128), (128, 256), (256, 999999))`` for strides 8-64
  (``two_stage_criterion.py`` lines 46-47). The assignment is per token (FCOS-style): for a token inside a box
  of largest side ``s``, ``max(l, t, r, b)`` lies in ``[s / 2, s]``, so an object reaches the one or two
  adjacent levels whose ranges meet ``[s / 2, s]`` (its centre on the finer one, its rim on the coarser one);
* a token is foreground (1) when at least one box is inside-and-assigned there, background (0) elsewhere,
  padding included (all labels are 1 in ``TwoStageCriterion.forward``, lines 74-76).

Loss (``foreground_supervision.py`` lines 145-181, ``two_stage_criterion.py`` lines 87-90): focal loss
``-w (1 - p_t)**gamma log(p_t)`` with ``alpha = 0.25``, ``gamma = 2`` on the sigmoid of the logits of every
token, padded tokens included as background (the logits are taken before the padding fill,
``focus_detr_transformer.py`` lines 450-454); summed per image, divided by that image's number of foreground
tokens (at least 1), then averaged over the batch. Focus DETR weights it by 1.5 (``select_loss``,
``two_stage_criterion.py`` line 44); here the weight stays with the criterion's weight dict (``loss_salience``,
2 in Salience DETR's configs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from modeling.box_ops import box_cxcywh_to_xyxy
from modeling.losses import sigmoid_focal_loss

from .salience_supervision import ScoreMapLoss, target_inputs

LimitRange = Sequence[tuple[float, float]]

FOCUS_LIMIT_RANGE: tuple[tuple[float, float], ...] = ((-1, 64), (64, 128), (128, 256), (256, 999999))
LOSS_TYPES = ("focal", "bce")
NORMALIZATIONS = ("per_image", "batch")

__all__ = [
    "FOCUS_LIMIT_RANGE",
    "FocusForegroundLoss",
    "foreground_loss",
    "foreground_targets",
    "overlapping_limit_range",
    "padding_masks",
]


def overlapping_limit_range(limit_range: LimitRange, overlap: float) -> tuple[tuple[float, float], ...]:
    """Widens every level's range down into its finer neighbour.

    The lower bound of level ``l > 0`` moves down by ``overlap`` times the width of level ``l - 1``'s range
    (negative lower bounds count from 0), so adjacent ranges share that fraction of the finer range.
    With :data:`FOCUS_LIMIT_RANGE` and ``overlap=0.5``: ``((-1, 64), (32, 128), (96, 256), (192, 999999))``.

    Args:
        limit_range: per level, finest first, ``(lo, hi)``.
        overlap: fraction in ``[0, 1]``; 0 returns the ranges unchanged.

    Returns:
        The widened ranges, one ``(lo, hi)`` per level.
    """
    if not 0 <= overlap <= 1:
        raise ValueError(f"overlap must lie in [0, 1], got {overlap}")
    ranges = [(float(lo), float(hi)) for lo, hi in limit_range]
    widened = ranges[:1]
    for (finer_lo, finer_hi), (lo, hi) in zip(ranges, ranges[1:]):
        widened.append((lo - overlap * (finer_hi - max(finer_lo, 0.0)), hi))
    return tuple(widened)


def _absolute_xyxy(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Boxes ``[M, 4]`` normalised cxcywh -> ``[M, 4]`` xyxy in pixels of an ``(h, w)`` image, in the boxes' dtype
    (at least float32)."""
    height, width = image_size
    dtype = torch.promote_types(boxes.dtype, torch.float32)
    scale = torch.tensor([width, height, width, height], dtype=dtype, device=boxes.device)
    return box_cxcywh_to_xyxy(boxes.to(dtype)) * scale


def _token_centres(
    shape: tuple[int, int], stride: tuple[float, float], device, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Token centres of one level in pixels (``dtype``): ``ys`` ``[h, 1, 1]`` and ``xs`` ``[1, w, 1]``."""
    ys = (torch.arange(shape[0], dtype=dtype, device=device) + 0.5) * stride[0]
    xs = (torch.arange(shape[1], dtype=dtype, device=device) + 0.5) * stride[1]
    return ys[:, None, None], xs[None, :, None]


def _level_foreground(
    boxes_xyxy: Tensor,
    shape: tuple[int, int],
    stride: tuple[float, float],
    limit: tuple[float, float],
    center_sampling_radius: float | None,
) -> Tensor:
    """Foreground of one image on one level.

    Args:
        boxes_xyxy: ``[M, 4]`` absolute xyxy boxes, ``M`` may be 0.
        shape: ``(h, w)`` of the level.
        stride: ``(stride_y, stride_x)`` in pixels.
        limit: ``(lo, hi)``; a box is assigned at a token when ``lo < max(l, t, r, b) <= hi``.
        center_sampling_radius: if set, a token must also lie within this many strides of the box centre.

    Returns:
        ``[h, w]`` bool, True where some box is inside and assigned.
    """
    if boxes_xyxy.shape[0] == 0:
        return torch.zeros(shape, dtype=torch.bool, device=boxes_xyxy.device)
    ys, xs = _token_centres(shape, stride, boxes_xyxy.device, boxes_xyxy.dtype)
    x1, y1, x2, y2 = boxes_xyxy.unbind(-1)  # each [M]
    distances = torch.stack(torch.broadcast_tensors(xs - x1, ys - y1, x2 - xs, y2 - ys), dim=-1)  # [h, w, M, 4]
    farthest = distances.amax(dim=-1)
    positive = (distances.amin(dim=-1) > 0) & (farthest > limit[0]) & (farthest <= limit[1])  # [h, w, M]
    if center_sampling_radius is not None:
        near_x = (xs - (x1 + x2) / 2).abs() < center_sampling_radius * stride[1]
        near_y = (ys - (y1 + y2) / 2).abs() < center_sampling_radius * stride[0]
        positive = positive & near_x & near_y
    return positive.any(dim=-1)


def _check_levels(feature_shapes: Sequence, strides: Sequence, limit_range: LimitRange) -> None:
    if not (len(feature_shapes) == len(strides) == len(limit_range)):
        raise ValueError(
            f"feature_shapes ({len(feature_shapes)}), strides ({len(strides)}) and limit_range "
            f"({len(limit_range)}) must have one entry per level"
        )


def foreground_targets(
    boxes: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    feature_shapes: Sequence[tuple[int, int]],
    strides: Sequence[tuple[float, float]],
    limit_range: LimitRange = FOCUS_LIMIT_RANGE,
    center_sampling_radius: float | None = None,
) -> list[Tensor]:
    """Focus DETR's binary foreground targets of a batch.

    Args:
        boxes: per image, ``[M_i, 4]`` boxes in normalised cxcywh relative to that image's unpadded size.
        image_sizes: per image, ``(h_i, w_i)`` of the unpadded image.
        feature_shapes: per level, finest first, ``(h_l, w_l)`` of the padded batch's feature map.
        strides: per level, ``(stride_y, stride_x)`` in pixels (e.g. ``feature_strides`` of
            ``salience_supervision``).
        limit_range: per level, ``(lo, hi)`` bounds on a token's largest border distance to a box; ranges may
            overlap (see :func:`overlapping_limit_range`).
        center_sampling_radius: None (Focus DETR) counts the full box; a number keeps only tokens within that
            many strides of the box centre (the official code's disabled ``1.5``).

    Returns:
        Per level, ``[B, h_l, w_l]`` targets in ``{0, 1}``, in the dtype of the boxes (at least float32).
    """
    _check_levels(feature_shapes, strides, limit_range)
    if len(boxes) != len(image_sizes):
        raise ValueError(f"got boxes for {len(boxes)} images but {len(image_sizes)} image_sizes")
    absolute = [_absolute_xyxy(b, size) for b, size in zip(boxes, image_sizes)]
    dtype = absolute[0].dtype if absolute else torch.float32
    maps = []
    for shape, stride, limit in zip(feature_shapes, strides, limit_range):
        per_image = [_level_foreground(b, tuple(shape), stride, limit, center_sampling_radius) for b in absolute]
        maps.append(torch.stack(per_image).to(dtype))
    return maps


def padding_masks(
    image_sizes: Sequence[tuple[int, int]],
    feature_shapes: Sequence[tuple[int, int]],
    strides: Sequence[tuple[float, float]],
    device=None,
) -> list[Tensor]:
    """Padded tokens of every level, as nearest-neighbour resizing of the image mask marks them.

    Token ``(i, j)`` samples pixel ``(floor(i * stride_y), floor(j * stride_x))`` and is padding when that pixel
    lies outside the ``(h, w)`` image (``modeling.transformer.level_masks_from_image_mask``).

    Args:
        image_sizes: per image, unpadded ``(h_i, w_i)``.
        feature_shapes: per level, ``(h_l, w_l)``.
        strides: per level, ``(stride_y, stride_x)``.
        device: device of the masks.

    Returns:
        Per level, ``[B, h_l, w_l]`` bool, True on padding.
    """
    masks = []
    for (height, width), (stride_y, stride_x) in zip(feature_shapes, strides):
        rows = torch.floor(torch.arange(height, dtype=torch.float64, device=device) * stride_y)
        cols = torch.floor(torch.arange(width, dtype=torch.float64, device=device) * stride_x)
        per_image = [(rows[:, None] >= h) | (cols[None, :] >= w) for h, w in image_sizes]
        masks.append(torch.stack(per_image))
    return masks


def _flatten(maps: Sequence[Tensor]) -> Tensor:
    """Per-level ``[B, 1, h, w]`` or ``[B, h, w]`` -> ``[B, sum h*w]``."""
    return torch.cat([m.reshape(m.shape[0], -1) for m in maps], dim=1)


def foreground_loss(
    logits: Sequence[Tensor],
    target_maps: Sequence[Tensor],
    valid_maps: Sequence[Tensor] | None = None,
    loss_type: str = "focal",
    alpha: float = 0.25,
    gamma: float = 2.0,
    normalization: str = "per_image",
) -> Tensor:
    """Classification loss of the foreground logits against binary targets.

    Args:
        logits: per level, ``[B, 1, h_l, w_l]`` (or ``[B, h_l, w_l]``) foreground logits.
        target_maps: per level, ``[B, h_l, w_l]`` targets in ``{0, 1}`` from :func:`foreground_targets`.
        valid_maps: per level, ``[B, h_l, w_l]`` bool, False on tokens left out of the loss; None keeps all.
        loss_type: ``"focal"`` (sigmoid focal loss) or ``"bce"`` (plain binary cross-entropy).
        alpha: focal weight of foreground tokens (``1 - alpha`` for background).
        gamma: focal exponent.
        normalization: ``"per_image"`` (Focus DETR: each image's sum over its foreground count, averaged over
            images) or ``"batch"`` (Salience DETR: the batch sum over the batch's foreground count).

    Returns:
        Scalar loss; foreground counts are clamped to at least 1.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    flat_logits = _flatten(logits)
    targets = _flatten(target_maps).to(flat_logits.dtype)
    if flat_logits.shape != targets.shape:
        raise ValueError(f"logits flatten to {tuple(flat_logits.shape)} but targets to {tuple(targets.shape)}")
    valid = torch.ones_like(targets, dtype=torch.bool) if valid_maps is None else _flatten(valid_maps).bool()
    if loss_type == "focal":
        elementwise = sigmoid_focal_loss(flat_logits, targets, alpha, gamma)
    else:
        elementwise = F.binary_cross_entropy_with_logits(flat_logits, targets, reduction="none")
    elementwise = elementwise * valid
    positives = ((targets > 0) & valid).sum(dim=1)  # [B]
    if normalization == "per_image":
        return (elementwise.sum(dim=1) / positives.clamp(min=1)).mean()
    return elementwise.sum() / positives.sum().clamp(min=1)


class FocusForegroundLoss(ScoreMapLoss):
    """Focus DETR's foreground supervision with the interface of ``SalienceLoss``.

    Defaults are Focus DETR's (official code, ``huawei-noah/noah-research`` ``Focus-DETR/projects/focus_detr/
    modeling/``; see the module docstring for lines).

    Args:
        limit_range: per level, finest first, ``(lo, hi)`` on a token's largest border distance to a box.
            Default ``((-1, 64), (64, 128), (128, 256), (256, 999999))`` (``two_stage_criterion.py`` l. 47).
        overlap: widens adjacent ranges into each other (:func:`overlapping_limit_range`). Default 0: the
            official ranges do not overlap; the paper (Sec. 3.2) is reported to overlap adjacent intervals by
            50%, a reading the released code does not implement (set 0.5 for that reading).
        center_sampling_radius: None (default: full box, ``foreground_supervision.py`` l. 125 leaves the
            ``1.5``-stride centre region out) or a radius in strides.
        loss_type: ``"focal"`` (default, ``focal_loss_from_logits``, l. 145-157) or ``"bce"``.
        alpha: focal weight of foreground tokens. Default 0.25 (l. 145).
        gamma: focal exponent. Default 2 (l. 145).
        normalization: ``"per_image"`` (default, ``compute_cls_loss`` l. 171-181 and ``.mean()`` in
            ``two_stage_criterion.py`` l. 90) or ``"batch"``.
        ignore_padding: False (default: padded tokens are background, as in Focus DETR) or True to leave them
            out of the loss.
    """

    def __init__(
        self,
        limit_range: LimitRange = FOCUS_LIMIT_RANGE,
        overlap: float = 0.0,
        center_sampling_radius: float | None = None,
        loss_type: str = "focal",
        alpha: float = 0.25,
        gamma: float = 2.0,
        normalization: str = "per_image",
        ignore_padding: bool = False,
    ):
        super().__init__()
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if center_sampling_radius is not None and not center_sampling_radius > 0:
            raise ValueError(f"center_sampling_radius must be positive or None, got {center_sampling_radius}")
        self.overlap = overlap
        self.limit_range = overlapping_limit_range(limit_range, overlap)
        self.center_sampling_radius = center_sampling_radius
        self.loss_type = loss_type
        self.alpha = alpha
        self.gamma = gamma
        self.normalization = normalization
        self.ignore_padding = ignore_padding

    def targets(self, logits, targets, strides, image_sizes) -> list[Tensor]:
        """Per level, ``[B, h_l, w_l]`` binary targets for ``logits`` (arguments as :meth:`forward`)."""
        shapes, boxes = target_inputs(logits, targets)
        return foreground_targets(boxes, image_sizes, shapes, strides, self.limit_range, self.center_sampling_radius)

    def loss(self, logits, maps, strides, image_sizes) -> Tensor:
        """Focus DETR's loss of the foreground logits (padding ignored with ``ignore_padding``)."""
        valid = None
        if self.ignore_padding:
            shapes = [tuple(x.shape[-2:]) for x in logits]
            valid = [~m for m in padding_masks(image_sizes, shapes, strides, device=logits[0].device)]
        return foreground_loss(logits, maps, valid, self.loss_type, self.alpha, self.gamma, self.normalization)

    def extra_repr(self) -> str:
        return (
            f"limit_range={self.limit_range}, center_sampling_radius={self.center_sampling_radius}, "
            f"loss_type={self.loss_type}, alpha={self.alpha}, gamma={self.gamma}, "
            f"normalization={self.normalization}, ignore_padding={self.ignore_padding}"
        )
