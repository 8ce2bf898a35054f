"""The two-stage DETR meta-architecture (DINO-style, as Salience DETR and Relation DETR use it).

``forward(batched_inputs)`` follows the project's model contract (see ``DESIGN.md``): in training it returns the
weighted losses, in inference one ``{boxes, scores, labels}`` dict per image in original-image pixels.
:meth:`TwoStageDETR.predict` returns the raw predictions (every decoder layer, the selected two-stage proposals
and the encoder's token scores such as Salience DETR's salience maps), for analysis and parity tests. Variants
add losses as components (``extra_losses``), not by subclassing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from modeling.box_ops import box_xyxy_to_cxcywh
from modeling.postprocess import check_nms_iou_threshold, topk_detections
from modeling.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageBatch,
    batch_images,
    pixel_stat_buffer,
    targets_from_inputs,
)
from modeling.transformer import TransformerOutput, level_masks_from_image_mask

__all__ = ["TwoStageDETR"]


def normalised_targets(targets: Sequence[dict[str, Tensor]], image_sizes: Sequence[tuple[int, int]]) -> list[dict]:
    """Targets with ``boxes`` converted from xyxy pixels of each input image to normalised cxcywh."""
    converted = []
    for target, (height, width) in zip(targets, image_sizes):
        scale = target["boxes"].new_tensor([width, height, width, height])
        converted.append({**target, "boxes": box_xyxy_to_cxcywh(target["boxes"]) / scale})
    return converted


class TwoStageDETR(nn.Module):
    """Backbone, neck, sine position embedding, two-stage transformer, optional contrastive denoising.

    Args:
        backbone: images ``[B, 3, H, W]`` -> dict (or list) of feature maps.
        neck: backbone features -> list of ``num_feature_levels`` maps ``[B, E, h_l, w_l]``, finest first.
        position_embedding: level mask ``[B, h_l, w_l]`` -> ``[B, E, h_l, w_l]``.
        transformer: a ``TwoStageTransformer`` (or variant).
        criterion: a ``DetrCriterion``; its ``weight_dict`` weighs every loss the model returns.
        num_classes: classes ``C``.
        denoising: optional ``ContrastiveDenoising``; used in training only.
        extra_losses: losses a variant adds, by name: modules ``loss(output, targets, batch, model)`` returning
            unweighted losses (Salience DETR's salience supervision, Relation DETR's one-to-many hybrid matching),
            weighted by the criterion's weight dict like the others. A ``None`` entry is dropped (ablations).
        pixel_mean: RGB mean in [0, 1] units.
        pixel_std: RGB std in [0, 1] units.
        size_divisibility: pad the batch to a multiple of this.
        aux_loss: supervise every decoder layer (and the denoising queries of every layer).
        num_detections: detections per image at inference (top-k over query x class).
        nms_iou_threshold: ``None`` (the published models: every top-k detection is kept) or an IoU in
            ``(0, 1]``: at inference, a detection that overlaps a higher-scoring one of the same image by more
            than this is dropped (class-agnostic non-maximum suppression after the top-k, the official
            ``PostProcess``'s option). For short training runs, whose decoder still emits duplicates.
        channels_last: run the backbone and the neck in the channels-last memory format (their convolution
            weights and the image batch): the same values, faster convolutions on CPUs (oneDNN) and GPUs. Only
            the memory layout changes; checkpoints are unaffected.
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        position_embedding: nn.Module,
        transformer: nn.Module,
        criterion: nn.Module,
        num_classes: int,
        denoising: nn.Module | None = None,
        extra_losses: Mapping[str, nn.Module | None] | None = None,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
        size_divisibility: int = 32,
        aux_loss: bool = True,
        num_detections: int = 100,
        nms_iou_threshold: float | None = None,
        channels_last: bool = True,
    ):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.position_embedding = position_embedding
        self.transformer = transformer
        self.criterion = criterion
        self.denoising = denoising
        self.extra_losses = nn.ModuleDict({k: v for k, v in (extra_losses or {}).items() if v is not None})
        self.num_classes = num_classes
        self.size_divisibility = size_divisibility
        self.aux_loss = aux_loss
        self.num_detections = num_detections
        self.nms_iou_threshold = check_nms_iou_threshold(nms_iou_threshold, "model.nms_iou_threshold")
        self.channels_last = channels_last
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
            self.neck.to(memory_format=torch.channels_last)
        self.register_buffer("pixel_mean", pixel_stat_buffer(pixel_mean, "pixel_mean"), persistent=False)
        self.register_buffer("pixel_std", pixel_stat_buffer(pixel_std, "pixel_std", positive=True), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batched_inputs: Sequence[dict[str, Any]]) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Weighted losses (training) or detections (inference); see the module docstring."""
        if self.training:
            return self.losses(batched_inputs)
        return self.inference(batched_inputs)

    def preprocess(self, batched_inputs: Sequence[dict[str, Any]]) -> ImageBatch:
        """Normalised, padded image batch with its padding mask."""
        return batch_images(batched_inputs, self.pixel_mean, self.pixel_std, self.size_divisibility)

    def extract_features(self, images: Tensor) -> list[Tensor]:
        """Backbone then neck: ``num_feature_levels`` maps ``[B, E, h_l, w_l]``, finest first."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return list(self.neck(self.backbone(images)))

    def fuse_for_inference(self) -> TwoStageDETR:
        """Folds the batch norms into the convolutions and merges re-parameterisable blocks, in place, for
        inference only (:func:`modeling.fusion.fuse_for_inference`); returns the model."""
        from modeling.fusion import fuse_for_inference

        return fuse_for_inference(self)

    def run(self, batch: ImageBatch, denoising: Any | None = None) -> TransformerOutput:
        """Features, masks and position embeddings of a batch, through the transformer.

        Args:
            batch: the preprocessed images.
            denoising: optional denoising queries (training).

        Returns:
            the transformer's predictions (denoising queries, if any, still first).
        """
        feats = self.extract_features(batch.images)
        level_masks = level_masks_from_image_mask(batch.mask, [tuple(f.shape[-2:]) for f in feats])
        pos_embeds = [self.position_embedding(mask) for mask in level_masks]
        return self.transformer(feats, level_masks, pos_embeds, denoising)

    def predict(self, batched_inputs: Sequence[dict[str, Any]]) -> TransformerOutput:
        """Raw predictions of a batch (no denoising): every decoder layer, selected proposals, token scores."""
        return self.run(self.preprocess(batched_inputs))

    def inference(self, batched_inputs: Sequence[dict[str, Any]]) -> list[dict[str, Tensor]]:
        """Detections per image, boxes in pixels of the original ``height`` x ``width``."""
        output = self.predict(batched_inputs)
        sizes = [_original_size(record) for record in batched_inputs]
        return topk_detections(
            output.dec_logits[-1], output.dec_boxes[-1], sizes, self.num_detections, self.nms_iou_threshold
        )

    def losses(self, batched_inputs: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        """Weighted losses of a training batch (boxes/labels in the inputs)."""
        batch = self.preprocess(batched_inputs)
        # targets in the model's dtype (float64 for a ``model.double()``), at least float32 (as for half models)
        box_dtype = torch.promote_types(self.pixel_mean.dtype, torch.float32)
        targets = targets_from_inputs(batched_inputs, self.device, self.num_classes, box_dtype)
        targets = normalised_targets(targets, batch.image_sizes)
        denoising = self.denoising(targets) if self.denoising is not None else None
        output = self.run(batch, denoising)
        outputs = self.criterion_inputs(output, denoising)
        losses = self.criterion(outputs, targets)
        for name, extra in self.extra_losses.items():
            added = extra(output, targets, batch, self)
            clash = sorted(set(added) & set(losses))
            if clash:
                raise ValueError(f"extra_losses[{name!r}] returns losses {clash} that another loss already returned")
            losses.update(added)
        return self.criterion.weighted(losses)

    def criterion_inputs(self, output: TransformerOutput, denoising: Any | None) -> dict[str, Any]:
        """The criterion's ``outputs`` dict: last layer, ``aux_outputs``, ``enc_outputs``, ``dn_metas``."""
        dec_logits, dec_boxes = output.dec_logits, output.dec_boxes
        outputs: dict[str, Any] = {}
        if denoising is not None:
            dec_logits, dec_boxes, outputs["dn_metas"] = denoising.split(dec_logits, dec_boxes, self.aux_loss)
        outputs.update({"pred_logits": dec_logits[-1], "pred_boxes": dec_boxes[-1]})
        if self.aux_loss:
            outputs["aux_outputs"] = [
                {"pred_logits": logits, "pred_boxes": boxes} for logits, boxes in zip(dec_logits[:-1], dec_boxes[:-1])
            ]
        outputs["enc_outputs"] = {"pred_logits": output.enc_logits, "pred_boxes": output.enc_boxes}
        return outputs


def _original_size(record: dict[str, Any]) -> tuple[int, int]:
    """``(height, width)`` of the original image; the input image's size when not given."""
    image = record["image"]
    return int(record.get("height", image.shape[-2])), int(record.get("width", image.shape[-1]))
