"""Relation DETR / LP-DETR as a detector: the two-stage DETR meta-architecture plus hybrid (one-to-many) losses."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from modeling.meta_arch import TwoStageDETR
from modeling.preprocess import IMAGENET_MEAN, IMAGENET_STD, ImageBatch
from modeling.transformer import TransformerOutput

from .relation_transformer import HYBRID_KEY

__all__ = ["RelationDETR", "repeat_targets"]


def repeat_targets(targets: Sequence[dict[str, Tensor]], times: int) -> list[dict[str, Tensor]]:
    """Targets whose ``boxes`` and ``labels`` are repeated ``times`` times (one-to-many matching)."""
    return [{**t, "boxes": t["boxes"].repeat(times, 1), "labels": t["labels"].repeat(times)} for t in targets]


class RelationDETR(TwoStageDETR):
    """:class:`~modeling.meta_arch.TwoStageDETR` with a ``RelationTransformer`` and its hybrid losses.

    In training, the hybrid branch's predictions (``extras["hybrid"]``: every decoder layer and its own two-stage
    proposals) are matched by the criterion's Hungarian matcher to the ground truth repeated ``hybrid_assign``
    times; the losses get the suffix ``_hybrid`` (``loss_class_hybrid``, ``loss_bbox_0_hybrid``,
    ``loss_giou_enc_hybrid``, ...; weights from ``build_weight_dict(..., hybrid_suffix="_hybrid")``).

    Args:
        backbone, neck, position_embedding, transformer, criterion, num_classes, denoising, pixel_mean,
        pixel_std, size_divisibility, aux_loss, num_detections: as for ``TwoStageDETR``.
        hybrid_assign: copies of the ground truth for the one-to-many matching.
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        position_embedding: nn.Module,
        transformer: nn.Module,
        criterion: nn.Module,
        num_classes: int,
        hybrid_assign: int = 6,
        denoising: nn.Module | None = None,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
        size_divisibility: int = 32,
        aux_loss: bool = True,
        num_detections: int = 100,
    ):
        super().__init__(
            backbone,
            neck,
            position_embedding,
            transformer,
            criterion,
            num_classes,
            denoising=denoising,
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
            size_divisibility=size_divisibility,
            aux_loss=aux_loss,
            num_detections=num_detections,
        )
        if hybrid_assign < 1:
            raise ValueError(f"hybrid_assign must be >= 1, got {hybrid_assign}")
        self.hybrid_assign = hybrid_assign

    def auxiliary_losses(
        self, output: TransformerOutput, targets: Sequence[dict[str, Tensor]], batch: ImageBatch
    ) -> dict[str, Tensor]:
        """Unweighted one-to-many losses of the hybrid branch, suffixed ``_hybrid`` (none without the branch)."""
        del batch
        hybrid = output.extras.get(HYBRID_KEY)
        if hybrid is None:
            return {}
        outputs = self.criterion_inputs(hybrid, None)
        losses = self.criterion(outputs, repeat_targets(targets, self.hybrid_assign))
        return {f"{name}_hybrid": value for name, value in losses.items()}
