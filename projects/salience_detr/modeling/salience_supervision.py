"""Scale-independent salience supervision of Salience DETR (CVPR 2024).

Every feature cell of every level gets a salience target in [0, 1]:

* the cell centre ``((i + 0.5) * stride_y, (j + 0.5) * stride_x)`` is measured against each ground-truth box
  (absolute xyxy pixels of the unpadded image) by its four border distances ``l, t, r, b``;
* the cell is *inside* a box when ``min(l, t, r, b) > 0`` and *assigned* to the level (FCOS-like, per cell) when
  ``lo < max(l, t, r, b) <= hi`` with ``(lo, hi)`` the level's limit range;
* a box's salience at the cell is ``1 - sqrt(dx**2 + dy**2) / 2`` with ``dx = (l - r) / (l + r)`` and
  ``dy = (t - b) / (t + b)``: 1 at the box centre, ``1 - sqrt(2) / 2`` at its corners, independent of box size;
* the cell's target is the largest salience over the boxes containing it, kept only where at least one box both
  contains the cell and is assigned to the level there; it is 0 everywhere else (outside boxes, padding, other
  levels).

The loss is a focal loss on the sigmoid of the salience logits with the soft targets, summed over all cells of all
levels and images and divided by the number of cells with a positive target (at least 1).
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from modeling.losses import sigmoid_focal_loss

LimitRange = Sequence[tuple[float, float]]

DEFAULT_LIMIT_RANGE: tuple[tuple[float, float], ...] = ((-1, 64), (64, 128), (128, 256), (256, 99999))

__all__ = [
    "DEFAULT_LIMIT_RANGE",
    "SalienceLoss",
    "ScoreMapLoss",
    "target_inputs",
    "feature_strides",
    "salience_focal_loss",
    "salience_target_maps",
    "TokenScoreSupervision",
]


def feature_strides(
    padded_size: tuple[int, int], feature_shapes: Sequence[tuple[int, int]]
) -> list[tuple[float, float]]:
    """Per-level strides of a padded batch, as real numbers (a level need not divide the padded size).

    Args:
        padded_size: ``(H, W)`` of the padded image batch.
        feature_shapes: ``(H_l, W_l)`` of each level.

    Returns:
        ``(stride_y, stride_x) = (H / H_l, W / W_l)`` for each level.
    """
    height, width = padded_size
    return [(height / h, width / w) for h, w in feature_shapes]


def _normalized_cxcywh_to_absolute_xyxy(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Boxes ``[M, 4]`` normalised cxcywh -> ``[M, 4]`` xyxy in pixels of an ``(h, w)`` image."""
    centre, size = boxes[:, :2], boxes[:, 2:]
    corners = torch.cat([centre - 0.5 * size, centre + 0.5 * size], dim=-1)
    height, width = image_size
    return corners * torch.tensor([width, height, width, height], device=boxes.device)


def _cell_centres(
    feature_shape: tuple[int, int], stride: tuple[float, float], device, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Pixel coordinates of the cell centres of one level, of ``dtype``.

    Returns:
        ``ys`` of shape ``[H_l, 1, 1]`` and ``xs`` of shape ``[1, W_l, 1]``, ready to broadcast against boxes.
    """
    height, width = feature_shape
    ys = (torch.arange(height, dtype=dtype, device=device) + 0.5) * stride[0]
    xs = (torch.arange(width, dtype=dtype, device=device) + 0.5) * stride[1]
    return ys[:, None, None], xs[None, :, None]


def _single_image_level_target(
    boxes_xyxy: Tensor, feature_shape: tuple[int, int], stride: tuple[float, float], limit: tuple[float, float]
) -> Tensor:
    """Salience target of one image on one level.

    Args:
        boxes_xyxy: ``[M, 4]`` absolute xyxy boxes (pixels of the unpadded image), ``M`` may be 0.
        feature_shape: ``(H_l, W_l)``.
        stride: ``(stride_y, stride_x)`` of the level.
        limit: ``(lo, hi)``; a cell is assigned to the level when ``lo < max(l, t, r, b) <= hi``.

    Returns:
        ``[H_l, W_l]`` target map in the dtype of the boxes, at least float32.
    """
    dtype = torch.promote_types(boxes_xyxy.dtype, torch.float32)
    ys, xs = _cell_centres(feature_shape, stride, boxes_xyxy.device, dtype)
    if boxes_xyxy.shape[0] == 0:
        return torch.zeros(feature_shape, dtype=dtype, device=boxes_xyxy.device)
    x1, y1, x2, y2 = boxes_xyxy.to(dtype).unbind(-1)  # each [M]
    left, top = xs - x1, ys - y1  # [1, W, M], [H, 1, M]
    right, bottom = x2 - xs, y2 - ys
    left, top, right, bottom = torch.broadcast_tensors(left, top, right, bottom)  # each [H, W, M]
    distances = torch.stack([left, top, right, bottom], dim=-1)  # [H, W, M, 4]
    inside = distances.amin(dim=-1) > 0  # [H, W, M]
    farthest = distances.amax(dim=-1)
    assigned = inside & (farthest > limit[0]) & (farthest <= limit[1])

    dx = (left - right) / (left + right)
    dy = (top - bottom) / (top + bottom)
    salience = 1 - torch.sqrt(dx**2 + dy**2) / 2
    salience = torch.where(inside, salience, torch.zeros_like(salience))
    target = salience.amax(dim=-1)  # [H, W]
    return torch.where(assigned.any(dim=-1), target, torch.zeros_like(target))


def salience_target_maps(
    boxes: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    feature_shapes: Sequence[tuple[int, int]],
    strides: Sequence[tuple[float, float]],
    limit_range: LimitRange = DEFAULT_LIMIT_RANGE,
) -> list[Tensor]:
    """Per-level salience targets of a batch.

    Args:
        boxes: per image, ``[M_i, 4]`` boxes in normalised cxcywh relative to that image's unpadded size
            (the DETR target format).
        image_sizes: per image, ``(h_i, w_i)`` of the unpadded image the boxes are normalised by.
        feature_shapes: per level, ``(H_l, W_l)`` of the feature map (of the padded batch).
        strides: per level, ``(stride_y, stride_x)`` in pixels, e.g. from :func:`feature_strides`.
        limit_range: per level, ``(lo, hi)`` bounds on a cell's largest border distance to a box.

    Returns:
        Per level, a ``[B, H_l, W_l]`` tensor of targets in [0, 1], in the dtype of the boxes, at least float32.
    """
    if not (len(feature_shapes) == len(strides) == len(limit_range)):
        raise ValueError(
            f"feature_shapes ({len(feature_shapes)}), strides ({len(strides)}) and limit_range "
            f"({len(limit_range)}) must have one entry per level"
        )
    if len(boxes) != len(image_sizes):
        raise ValueError(f"got boxes for {len(boxes)} images but {len(image_sizes)} image_sizes")
    absolute = [_normalized_cxcywh_to_absolute_xyxy(b, size) for b, size in zip(boxes, image_sizes)]
    maps = []
    for shape, stride, limit in zip(feature_shapes, strides, limit_range):
        per_image = [_single_image_level_target(b, tuple(shape), stride, limit) for b in absolute]
        maps.append(torch.stack(per_image))
    return maps


def salience_focal_loss(
    logits: Sequence[Tensor],
    target_maps: Sequence[Tensor],
    alpha: float = 0.25,
    gamma: float = 2.0,
    positive_threshold: float = 0.0,
) -> Tensor:
    """Focal loss of the salience logits, normalised by the number of positive cells.

    Args:
        logits: per level, ``[B, 1, H_l, W_l]`` (or ``[B, H_l, W_l]``) salience logits.
        target_maps: per level, ``[B, H_l, W_l]`` targets from :func:`salience_target_maps`.
        alpha: focal weight of the positive term.
        gamma: focal exponent.
        positive_threshold: a cell counts as positive when its target exceeds this value.

    Returns:
        Scalar: sum over all cells, levels and images divided by ``max(#positive cells, 1)``.
    """
    flat_logits = torch.cat([x.reshape(x.shape[0], -1) for x in logits], dim=1)  # [B, N]
    flat_targets = torch.cat([t.reshape(t.shape[0], -1) for t in target_maps], dim=1).to(flat_logits.dtype)
    if flat_logits.shape != flat_targets.shape:
        raise ValueError(f"logits flatten to {tuple(flat_logits.shape)} but targets to {tuple(flat_targets.shape)}")
    num_pos = (flat_targets > positive_threshold).sum().clamp(min=1)
    return sigmoid_focal_loss(flat_logits, flat_targets, alpha, gamma).sum() / num_pos


class ScoreMapLoss(nn.Module):
    """Base of the supervisions of per-level token-score maps by boxes: targets from the boxes (no gradient), then
    a loss of the logits against them, returned as ``loss_salience``. Subclasses define :meth:`targets` and
    :meth:`loss`."""

    def forward(
        self,
        logits: Sequence[Tensor],
        targets: Sequence[dict],
        strides: Sequence[tuple[float, float]],
        image_sizes: Sequence[tuple[int, int]],
    ) -> dict[str, Tensor]:
        """Computes ``{"loss_salience": scalar}`` (unweighted).

        Args:
            logits: per level, finest first, ``[B, 1, H_l, W_l]`` score logits of the padded batch.
            targets: per image, a dict whose ``"boxes"`` are ``[M_i, 4]`` normalised cxcywh.
            strides: per level, ``(stride_y, stride_x)``; see :func:`feature_strides`.
            image_sizes: per image, unpadded ``(h_i, w_i)``.
        """
        with torch.no_grad():
            maps = self.targets(logits, targets, strides, image_sizes)
        return {"loss_salience": self.loss(logits, maps, strides, image_sizes)}

    def targets(
        self,
        logits: Sequence[Tensor],
        targets: Sequence[dict],
        strides: Sequence[tuple[float, float]],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[Tensor]:
        """Per level, ``[B, H_l, W_l]`` target maps for ``logits`` (arguments as :meth:`forward`)."""
        raise NotImplementedError

    def loss(self, logits: Sequence[Tensor], maps: Sequence[Tensor], strides, image_sizes) -> Tensor:
        """The scalar loss of ``logits`` against the target ``maps``."""
        raise NotImplementedError


def target_inputs(logits: Sequence[Tensor], targets: Sequence[dict]) -> tuple[list[tuple[int, int]], list[Tensor]]:
    """The map shapes of ``logits`` and the targets' boxes on their device: what the target functions take."""
    return [tuple(x.shape[-2:]) for x in logits], [t["boxes"].to(logits[0].device) for t in targets]


class SalienceLoss(ScoreMapLoss):
    """Salience DETR's salience supervision: targets from boxes, then a focal loss.

    Args:
        limit_range: per level, ``(lo, hi)`` bounds on a cell's largest border distance to a box.
        alpha: focal weight of the positive term.
        gamma: focal exponent.
        noise_scale: mixes the targets with uniform noise, ``(1 - s) * target + s * U(0, 1)``; cells above
            ``s / 2`` then count as positive. 0 (the paper's setting) disables it.
    """

    def __init__(
        self,
        limit_range: LimitRange = DEFAULT_LIMIT_RANGE,
        alpha: float = 0.25,
        gamma: float = 2.0,
        noise_scale: float = 0.0,
    ):
        super().__init__()
        self.limit_range = tuple(tuple(r) for r in limit_range)
        self.alpha = alpha
        self.gamma = gamma
        self.noise_scale = noise_scale

    def targets(self, logits, targets, strides, image_sizes) -> list[Tensor]:
        """Scale-independent salience targets (plus noise, with ``noise_scale``)."""
        shapes, boxes = target_inputs(logits, targets)
        maps = salience_target_maps(boxes, image_sizes, shapes, strides, self.limit_range)
        return [self._add_noise(m) for m in maps]

    def loss(self, logits, maps, strides, image_sizes) -> Tensor:
        """The focal loss of the salience logits (cells above ``noise_scale / 2`` count as positive)."""
        del strides, image_sizes
        return salience_focal_loss(logits, maps, self.alpha, self.gamma, positive_threshold=0.5 * self.noise_scale)

    def _add_noise(self, target: Tensor) -> Tensor:
        if self.noise_scale == 0:
            return target
        return (1 - self.noise_scale) * target + self.noise_scale * torch.rand_like(target)


class TokenScoreSupervision(nn.Module):
    """The detector's extra loss supervising the encoder's token scores (Salience DETR's salience maps).

    A component of ``TwoStageDETR(extra_losses=...)``: it reads ``output.token_scores`` and gives them, with the
    per-level strides of the padded batch, to ``loss`` (:class:`SalienceLoss`, or another module with its call,
    e.g. Focus DETR's foreground supervision for the paper's Table 7).

    Args:
        loss: ``loss(logits, targets, strides, image_sizes) -> {name: unweighted loss}``.
    """

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, output, targets: Sequence[dict], batch, model: nn.Module) -> dict[str, Tensor]:
        """Unweighted losses of the token scores of ``output`` (a ``TransformerOutput``) against ``targets``."""
        del model
        scores = output.token_scores
        if scores is None:
            raise ValueError(
                "TokenScoreSupervision needs an encoder that scores its tokens (e.g. Salience DETR's SalienceEncoder); "
                "this model's encoder gives no token_scores: remove the extra loss or change the encoder"
            )
        strides = feature_strides(tuple(batch.images.shape[-2:]), [tuple(s.shape[-2:]) for s in scores])
        return self.loss(scores, targets, strides, batch.image_sizes)
