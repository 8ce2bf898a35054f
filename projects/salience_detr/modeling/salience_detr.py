"""Salience DETR: the two-stage DETR meta-architecture plus salience supervision."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from modeling.meta_arch import TwoStageDETR
from modeling.preprocess import IMAGENET_MEAN, IMAGENET_STD, ImageBatch
from modeling.transformer import TransformerOutput

from .salience_supervision import feature_strides

__all__ = ["SalienceDETR"]


class SalienceDETR(TwoStageDETR):
    """:class:`~modeling.meta_arch.TwoStageDETR` with a ``SalienceTransformer`` and a salience loss.

    Args:
        backbone, neck, position_embedding, transformer, criterion, num_classes, denoising, pixel_mean,
        pixel_std, size_divisibility, aux_loss, num_detections: as for ``TwoStageDETR``.
        salience_loss: a ``SalienceLoss`` (returns ``loss_salience``, weighted by the criterion's weight dict);
            None trains without salience supervision.
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        position_embedding: nn.Module,
        transformer: nn.Module,
        criterion: nn.Module,
        num_classes: int,
        salience_loss: nn.Module | None = None,
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
        self.salience_loss = salience_loss

    def auxiliary_losses(
        self, output: TransformerOutput, targets: Sequence[dict[str, Tensor]], batch: ImageBatch
    ) -> dict[str, Tensor]:
        """``loss_salience`` (unweighted) of the salience logits against box-derived targets."""
        if self.salience_loss is None:
            return {}
        salience = output.extras["salience"]
        strides = feature_strides(tuple(batch.images.shape[-2:]), [tuple(s.shape[-2:]) for s in salience])
        return self.salience_loss(salience, targets, strides, batch.image_sizes)
