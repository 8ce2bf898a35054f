"""Set-prediction losses of the two-stage DETRs (Salience DETR, Relation DETR / LP-DETR).

``DetrCriterion`` returns UNWEIGHTED losses, named like the official implementations:

* ``loss_class``, ``loss_bbox``, ``loss_giou`` for the last decoder layer (``outputs["pred_logits"/"pred_boxes"]``);
* the same with suffix ``_{i}`` for ``outputs["aux_outputs"][i]`` (earlier decoder layers);
* suffix ``_enc`` for ``outputs["enc_outputs"]`` (two-stage proposals);
* suffix ``_dn`` / ``_dn_{i}`` for the denoising queries, when ``outputs["dn_metas"]`` is given (see
  ``DetrCriterion.denoising_losses`` for its structure).

``build_weight_dict`` builds the matching weights from the base weights, and ``weighted_losses`` applies them to
produce what the trainer sums. Every loss is normalised by the number of target boxes of the batch, averaged over
distributed processes and clamped to at least 1 (times the number of denoising groups for the ``_dn`` losses).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F

from modeling.box_ops import box_cxcywh_to_xyxy, paired_box_iou, paired_generalized_box_iou
from modeling.losses import normalised_sum, sigmoid_focal_loss, varifocal_loss
from modeling.matcher import HungarianMatcher

__all__ = [
    "CLASS_LOSS_TYPES",
    "DN_METAS_KEY",
    "DetrCriterion",
    "build_weight_dict",
    "denoising_indices",
    "num_boxes_for_normalisation",
    "weighted_losses",
]

CLASS_LOSS_TYPES = ("focal", "varifocal_iou_aware")
DN_METAS_KEY = "dn_metas"
_LOSS_KEYS = {"class": ("loss_class",), "boxes": ("loss_bbox", "loss_giou")}

Indices = list[tuple[Tensor, Tensor]]


def num_boxes_for_normalisation(
    targets: Sequence[Mapping[str, Tensor]], device: torch.device, dtype: torch.dtype = torch.float32
) -> float:
    """Number of target boxes per process: the batch total, averaged over distributed processes, at least 1.

    Args:
        targets: per-image dicts with ``labels`` ``[T_b]``.
        device: device of the all-reduce (the model's).
        dtype: floating dtype of the all-reduce and the average (float32, or float64 for a float64 model).

    Returns:
        The normaliser as a Python float.
    """
    total = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], dtype=dtype, device=device)
    world_size = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
        world_size = dist.get_world_size()
    return torch.clamp(total / world_size, min=1).item()


def denoising_indices(
    targets: Sequence[Mapping[str, Tensor]], denoising_groups: int, max_gt_num_per_image: int, device: torch.device
) -> Indices:
    """Fixed assignment of denoising queries to their ground truth.

    The denoising queries of an image are ``denoising_groups`` groups of ``max_gt_num_per_image`` slots; slot
    ``j < T_b`` of every group is a noised copy of target ``j`` (for contrastive denoising the slots after the
    positives are negatives and stay unmatched).

    Args:
        targets: per-image dicts with ``labels`` ``[T_b]``.
        denoising_groups: number of groups ``G``.
        max_gt_num_per_image: slots per group ``P``.
        device: device of the returned indices.

    Returns:
        Per image ``(query_idx, tgt_idx)``, int64 ``[G * T_b]`` each, group-major: query ``g * P + j`` <-> target ``j``.
    """
    indices = []
    for target in targets:
        num_targets = len(target["labels"])
        group = torch.arange(denoising_groups, dtype=torch.int64, device=device)
        tgt_idx = torch.arange(num_targets, dtype=torch.int64, device=device)
        query_idx = (group[:, None] * max_gt_num_per_image + tgt_idx[None, :]).flatten()
        indices.append((query_idx, tgt_idx.repeat(denoising_groups)))
    return indices


def build_weight_dict(
    base_weights: Mapping[str, float],
    num_decoder_layers: int,
    denoising: bool = True,
    two_stage: bool = True,
    hybrid_suffix: str | None = None,
    extra_weights: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Loss weights for every key ``DetrCriterion`` produces, in the official order.

    Order: base keys, their ``_dn`` copies, then for each auxiliary layer ``i < num_decoder_layers - 1`` the base
    and ``_dn`` keys with suffix ``_{i}``, then the ``_enc`` keys; then, with ``hybrid_suffix``, a copy of all of
    these with that suffix appended (Relation DETR's one-to-many branch, ``"_hybrid"``); finally
    ``extra_weights`` (e.g. ``{"loss_salience": 2}``).

    Args:
        base_weights: weights of the last-layer losses, e.g. ``{"loss_class": 1, "loss_bbox": 5, "loss_giou": 2}``.
        num_decoder_layers: number of decoder layers (``num_decoder_layers - 1`` auxiliary outputs).
        denoising: add ``_dn`` / ``_dn_{i}`` keys.
        two_stage: add ``_enc`` keys.
        hybrid_suffix: if given, duplicate all set-prediction keys with this suffix.
        extra_weights: further keys, added last as they are.

    Returns:
        Ordered dict ``loss name -> weight``.
    """
    if num_decoder_layers < 1:
        raise ValueError(f"build_weight_dict: num_decoder_layers must be >= 1, got {num_decoder_layers}")
    layer_weights = dict(base_weights)
    if denoising:
        layer_weights.update({f"{k}_dn": v for k, v in base_weights.items()})
    weights = dict(layer_weights)
    for i in range(num_decoder_layers - 1):
        weights.update({f"{k}_{i}": v for k, v in layer_weights.items()})
    if two_stage:
        weights.update({f"{k}_enc": v for k, v in base_weights.items()})
    if hybrid_suffix:
        weights.update({f"{k}{hybrid_suffix}": v for k, v in list(weights.items())})
    weights.update(extra_weights or {})
    return weights


def weighted_losses(
    losses: Mapping[str, Tensor], weight_dict: Mapping[str, float], strict: bool = True
) -> dict[str, Tensor]:
    """Multiplies each loss by its weight, giving the dict the trainer sums.

    Args:
        losses: unweighted losses (scalar tensors).
        weight_dict: weight of each loss name.
        strict: raise on a loss without a weight; when False such losses are dropped (the official behaviour).

    Returns:
        ``{name: loss * weight}`` for every loss that has a weight.
    """
    missing = sorted(k for k in losses if k not in weight_dict)
    if strict and missing:
        raise KeyError(f"weighted_losses: no weight for losses {missing}; weight_dict has {sorted(weight_dict)}")
    return {k: v * weight_dict[k] for k, v in losses.items() if k in weight_dict}


def _suffixed(losses: Mapping[str, Tensor], suffix: str) -> dict[str, Tensor]:
    """``losses`` with ``suffix`` appended to every key."""
    return {k + suffix: v for k, v in losses.items()}


def _matched_query_index(indices: Indices) -> tuple[Tensor, Tensor]:
    """``(batch_idx, query_idx)`` ``[K]`` of all matched predictions, image by image, for advanced indexing."""
    batch_idx = torch.cat([torch.full_like(pred, i) for i, (pred, _) in enumerate(indices)])
    query_idx = torch.cat([pred for pred, _ in indices])
    return batch_idx, query_idx


def _matched_targets(targets: Sequence[Mapping[str, Tensor]], indices: Indices, key: str) -> Tensor:
    """``targets[b][key][tgt_idx]`` concatenated over images, in the order of ``_matched_query_index``."""
    return torch.cat([t[key][tgt] for t, (_, tgt) in zip(targets, indices)])


class DetrCriterion(nn.Module):
    """Hungarian-matched classification, L1 and GIoU losses of a (two-stage, denoising) DETR.

    Args:
        num_classes: number of object classes (no background class; logits are ``[..., num_classes]``).
        matcher: assigns predictions to targets, ``matcher(pred_logits, pred_boxes, targets) -> indices``.
        weight_dict: weight of each loss name (kept for ``weighted``; ``forward`` returns unweighted losses).
        losses: which losses to compute: ``"class"`` (``loss_class``), ``"boxes"`` (``loss_bbox``, ``loss_giou``).
        class_loss: ``"focal"`` (official ``SetCriterion``) or ``"varifocal_iou_aware"`` (official
            ``HybridSetCriterion``: the matched class target is the detached IoU of the matched box).
        alpha: alpha of the class loss.
        gamma: gamma of the class loss.
        two_stage_binary_cls: supervise ``enc_outputs`` class-agnostically (every target label set to 0).
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: Mapping[str, float],
        losses: Iterable[str] = ("class", "boxes"),
        class_loss: str = "varifocal_iou_aware",
        alpha: float = 0.25,
        gamma: float = 2.0,
        two_stage_binary_cls: bool = False,
    ):
        super().__init__()
        losses = tuple(losses)
        unknown = [name for name in losses if name not in _LOSS_KEYS]
        if unknown or not losses:
            raise ValueError(f"DetrCriterion: losses must be a non-empty subset of {tuple(_LOSS_KEYS)}, got {losses}")
        if class_loss not in CLASS_LOSS_TYPES:
            raise ValueError(f"DetrCriterion: class_loss must be one of {CLASS_LOSS_TYPES}, got {class_loss!r}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.losses = losses
        self.class_loss = class_loss
        self.alpha = alpha
        self.gamma = gamma
        self.two_stage_binary_cls = two_stage_binary_cls

    def weighted(self, losses: Mapping[str, Tensor], strict: bool = True) -> dict[str, Tensor]:
        """``weighted_losses(losses, self.weight_dict, strict)``."""
        return weighted_losses(losses, self.weight_dict, strict=strict)

    def _check_targets(self, targets: Sequence[Mapping[str, Tensor]], batch_size: int) -> None:
        """Raises on targets that do not fit the predictions (count, shapes, label range)."""
        if len(targets) != batch_size:
            raise ValueError(f"DetrCriterion: {len(targets)} targets for a batch of {batch_size} images")
        for i, target in enumerate(targets):
            labels, boxes = target["labels"], target["boxes"]
            if labels.dim() != 1 or boxes.shape != (labels.numel(), 4):
                raise ValueError(
                    f"DetrCriterion: target {i} needs labels [T] and boxes [T, 4], got {tuple(labels.shape)} and "
                    f"{tuple(boxes.shape)}"
                )
        labels = torch.cat([t["labels"] for t in targets]) if targets else torch.zeros(0, dtype=torch.int64)
        if bool(((labels < 0) | (labels >= self.num_classes)).any()):
            per_image = [t["labels"].tolist() for t in targets]
            raise ValueError(f"DetrCriterion: target labels outside [0, {self.num_classes}): {per_image}")

    def loss_class(
        self, outputs: Mapping[str, Tensor], targets: Sequence[Mapping[str, Tensor]], indices: Indices, num_boxes: float
    ) -> dict[str, Tensor]:
        """Classification loss over all queries; unmatched queries are background.

        Args:
            outputs: ``pred_logits`` ``[B, Q, C]`` and ``pred_boxes`` ``[B, Q, 4]`` (normalised cxcywh).
            targets: per-image ``labels`` ``[T_b]`` and ``boxes`` ``[T_b, 4]``.
            indices: per-image ``(query_idx, tgt_idx)``.
            num_boxes: normaliser.

        Returns:
            ``{"loss_class": scalar}``: the loss summed over queries and classes, divided by ``num_boxes``.
        """
        logits = outputs["pred_logits"]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16/fp16 under autocast
        matched = _matched_query_index(indices)
        onehot = torch.zeros_like(logits)
        onehot[matched + (_matched_targets(targets, indices, "labels"),)] = 1
        if self.class_loss == "focal":
            loss = sigmoid_focal_loss(logits, onehot, self.alpha, self.gamma)
        else:
            quality = torch.zeros(logits.shape[:2], dtype=logits.dtype, device=logits.device)
            quality[matched] = self._matched_iou(outputs["pred_boxes"][matched], targets, indices)
            loss = varifocal_loss(logits, onehot, quality, self.alpha, self.gamma)
        return {"loss_class": normalised_sum(loss, num_boxes)}

    @staticmethod
    @torch.no_grad()
    def _matched_iou(pred_boxes: Tensor, targets: Sequence[Mapping[str, Tensor]], indices: Indices) -> Tensor:
        """Detached IoU ``[K]`` of matched predicted boxes ``[K, 4]`` (cxcywh) with their targets."""
        gt_boxes = _matched_targets(targets, indices, "boxes")
        return paired_box_iou(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(gt_boxes))

    def loss_boxes(
        self, outputs: Mapping[str, Tensor], targets: Sequence[Mapping[str, Tensor]], indices: Indices, num_boxes: float
    ) -> dict[str, Tensor]:
        """L1 and GIoU losses of the matched boxes (normalised cxcywh).

        Args:
            outputs: ``pred_boxes`` ``[B, Q, 4]``.
            targets: per-image ``boxes`` ``[T_b, 4]``.
            indices: per-image ``(query_idx, tgt_idx)``.
            num_boxes: normaliser.

        Returns:
            ``{"loss_bbox": scalar, "loss_giou": scalar}``, sums over matched pairs divided by ``num_boxes``.
        """
        pred_boxes = outputs["pred_boxes"][_matched_query_index(indices)]
        gt_boxes = _matched_targets(targets, indices, "boxes")
        loss_bbox = F.l1_loss(pred_boxes, gt_boxes, reduction="none").sum() / num_boxes
        giou = paired_generalized_box_iou(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(gt_boxes))
        return {"loss_bbox": loss_bbox, "loss_giou": (1 - giou).sum() / num_boxes}

    def set_losses(
        self,
        outputs: Mapping[str, Any],
        targets: Sequence[Mapping[str, Tensor]],
        num_boxes: float,
        indices: Indices | None = None,
    ) -> dict[str, Tensor]:
        """The requested losses of one set of predictions (no suffix).

        Args:
            outputs: ``pred_logits`` ``[B, Q, C]`` and ``pred_boxes`` ``[B, Q, 4]``.
            targets: per-image ``labels`` ``[T_b]`` and ``boxes`` ``[T_b, 4]``.
            num_boxes: normaliser.
            indices: per-image ``(query_idx, tgt_idx)``; Hungarian matching when None.

        Returns:
            ``loss_class`` and/or ``loss_bbox``, ``loss_giou``.
        """
        if indices is None:
            indices = self.matcher(outputs["pred_logits"], outputs["pred_boxes"], targets)
        losses = {}
        if "class" in self.losses:
            losses.update(self.loss_class(outputs, targets, indices, num_boxes))
        if "boxes" in self.losses:
            losses.update(self.loss_boxes(outputs, targets, indices, num_boxes))
        return losses

    def denoising_losses(
        self, dn_metas: Mapping[str, Any], targets: Sequence[Mapping[str, Tensor]], num_boxes: float | None = None
    ) -> dict[str, Tensor]:
        """Losses of the denoising queries, with their fixed assignment.

        Args:
            dn_metas: the official denoising structure: ``denoising_output`` (``pred_logits`` ``[B, G * P, C]``,
                ``pred_boxes`` ``[B, G * P, 4]``, optional ``aux_outputs`` list of such dicts, one per earlier
                decoder layer), ``denoising_groups`` ``G`` and ``max_gt_num_per_image`` ``P`` (slots per group,
                see ``denoising_indices``). Without ``denoising_output`` (inference) there is nothing to compute.
            targets: per-image ``labels`` ``[T_b]`` and ``boxes`` ``[T_b, 4]``.
            num_boxes: normaliser of the matching losses; computed from ``targets`` when None.

        Returns:
            Losses with suffix ``_dn`` (last layer) and ``_dn_{i}`` (``aux_outputs[i]``), normalised by
            ``num_boxes * G`` (``num_boxes`` alone when ``G`` is 0, where every loss is 0).
        """
        dn_output = dn_metas.get("denoising_output")
        if dn_output is None:
            return {}
        groups = int(dn_metas["denoising_groups"])
        device = dn_output["pred_logits"].device
        if num_boxes is None:
            dtype = torch.promote_types(dn_output["pred_logits"].dtype, torch.float32)
            num_boxes = num_boxes_for_normalisation(targets, device, dtype)
        indices = denoising_indices(targets, groups, int(dn_metas["max_gt_num_per_image"]), device)
        normaliser = num_boxes * max(groups, 1)
        losses = _suffixed(self.set_losses(dn_output, targets, normaliser, indices), "_dn")
        for i, aux in enumerate(dn_output.get("aux_outputs", [])):
            losses.update(_suffixed(self.set_losses(aux, targets, normaliser, indices), f"_dn_{i}"))
        return losses

    def _encoder_targets(self, targets: Sequence[Mapping[str, Tensor]]) -> Sequence[Mapping[str, Tensor]]:
        """Targets of the two-stage proposals: class-agnostic copies when ``two_stage_binary_cls``."""
        if not self.two_stage_binary_cls:
            return targets
        return [{**t, "labels": torch.zeros_like(t["labels"])} for t in targets]

    def forward(self, outputs: Mapping[str, Any], targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """Unweighted losses of every prediction set present in ``outputs``.

        Args:
            outputs: ``pred_logits`` ``[B, Q, C]``, ``pred_boxes`` ``[B, Q, 4]`` (normalised cxcywh, last decoder
                layer); optional ``aux_outputs`` (list of such dicts, earlier layers), ``enc_outputs`` (such a
                dict, two-stage proposals) and ``dn_metas`` (see ``denoising_losses``).
            targets: ``B`` dicts with ``labels`` (int64 ``[T_b]`` in ``[0, num_classes)``) and ``boxes``
                (``[T_b, 4]`` normalised cxcywh); ``T_b`` may be 0.

        Returns:
            Scalar losses keyed ``loss_class``/``loss_bbox``/``loss_giou`` plus suffixes ``_{i}``, ``_enc``,
            ``_dn``, ``_dn_{i}``.
        """
        logits = outputs["pred_logits"]
        if logits.shape[-1] != self.num_classes:
            raise ValueError(f"DetrCriterion: pred_logits has {logits.shape[-1]} classes, expected {self.num_classes}")
        self._check_targets(targets, logits.shape[0])
        num_boxes = num_boxes_for_normalisation(
            targets, logits.device, torch.promote_types(logits.dtype, torch.float32)
        )
        losses = self.set_losses(outputs, targets, num_boxes)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses.update(_suffixed(self.set_losses(aux, targets, num_boxes), f"_{i}"))
        if "enc_outputs" in outputs:
            enc_targets = self._encoder_targets(targets)
            losses.update(_suffixed(self.set_losses(outputs["enc_outputs"], enc_targets, num_boxes), "_enc"))
        if DN_METAS_KEY in outputs:
            losses.update(self.denoising_losses(outputs[DN_METAS_KEY], targets, num_boxes))
        return losses
