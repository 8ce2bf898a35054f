"""Contrastive denoising (CDN) queries of DINO-style two-stage DETRs, as Salience DETR and Relation DETR use them.

During training the decoder receives, before its ``Q`` matching queries, ``G`` groups of noised copies of the
ground truth. Each group holds ``P = 2 * M`` slots per image (``M``: most objects in one image of the batch):
slots ``[0, M)`` are *positives* (small box noise, to be reconstructed) and slots ``[M, 2M)`` *negatives*
(larger box noise, to be classified as background). Slot ``j`` of either half carries object ``j`` of the image;
slots past the image's object count are padding (zero label query, zero box logits i.e. a centred half-size box)
and get no loss. The self-attention mask keeps the matching queries from seeing any denoising query and the
groups from seeing each other.

The detector splits the decoder outputs with ``split_denoising_outputs`` and hands the criterion
``outputs["dn_metas"]`` (see ``modeling.criterion.DetrCriterion.denoising_losses``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from modeling.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, inverse_sigmoid

__all__ = ["ContrastiveDenoising", "DenoisingQueries", "denoising_attn_mask", "split_denoising_outputs"]


def denoising_attn_mask(
    denoising_groups: int, max_gt_num_per_image: int, num_queries: int, device: torch.device | None = None
) -> Tensor:
    """Decoder self-attention mask for ``G`` denoising groups followed by ``Q`` matching queries.

    Args:
        denoising_groups: number of groups ``G``.
        max_gt_num_per_image: slots per group ``P``.
        num_queries: number of matching queries ``Q``.
        device: device of the mask.

    Returns:
        Bool ``[G * P + Q, G * P + Q]``; ``True`` where query ``row`` may NOT attend to key ``col``: a matching
        query to any denoising query, a denoising query to a query of another group. Denoising queries see the
        matching queries.
    """
    num_dn = denoising_groups * max_gt_num_per_image
    size = num_dn + num_queries
    mask = torch.zeros(size, size, dtype=torch.bool, device=device)
    if num_dn == 0:
        return mask
    group = torch.arange(num_dn, device=device) // max_gt_num_per_image
    mask[:num_dn, :num_dn] = group[:, None] != group[None, :]
    mask[num_dn:, :num_dn] = True
    return mask


def _split_queries(tensor: Tensor, num_denoising: int) -> tuple[Tensor, Tensor]:
    """Splits ``[..., N, X]`` along the query dimension (``-2``) into ``[..., :num_denoising, X]`` and the rest."""
    return tensor[..., :num_denoising, :], tensor[..., num_denoising:, :]


def _per_layer_outputs(outputs_class: Tensor, outputs_coord: Tensor, aux_loss: bool) -> dict[str, Any]:
    """``pred_logits``/``pred_boxes`` of the last layer and, with ``aux_loss``, ``aux_outputs`` of the others."""
    output: dict[str, Any] = {"pred_logits": outputs_class[-1], "pred_boxes": outputs_coord[-1]}
    if aux_loss:
        output["aux_outputs"] = [
            {"pred_logits": logits, "pred_boxes": boxes}
            for logits, boxes in zip(outputs_class[:-1], outputs_coord[:-1])
        ]
    return output


def split_denoising_outputs(
    outputs_class: Tensor,
    outputs_coord: Tensor,
    denoising_groups: int,
    max_gt_num_per_image: int,
    aux_loss: bool = True,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Separates the denoising predictions of every decoder layer from the matching ones.

    Args:
        outputs_class: ``[L, B, G * P + Q, C]`` logits of every decoder layer.
        outputs_coord: ``[L, B, G * P + Q, 4]`` normalised cxcywh boxes of every decoder layer.
        denoising_groups: ``G``.
        max_gt_num_per_image: slots per group ``P`` (positives and negatives).
        aux_loss: also put the earlier layers into ``denoising_output["aux_outputs"]``.

    Returns:
        ``(matching_class [L, B, Q, C], matching_coord [L, B, Q, 4], dn_metas)`` where ``dn_metas`` is what the
        criterion reads from ``outputs["dn_metas"]``: ``denoising_output`` (``pred_logits`` ``[B, G * P, C]``,
        ``pred_boxes`` ``[B, G * P, 4]`` of the last layer, ``aux_outputs`` of layers ``0..L-2``),
        ``denoising_groups`` and ``max_gt_num_per_image``.
    """
    num_denoising = denoising_groups * max_gt_num_per_image
    dn_class, matching_class = _split_queries(outputs_class, num_denoising)
    dn_coord, matching_coord = _split_queries(outputs_coord, num_denoising)
    dn_metas = {
        "denoising_output": _per_layer_outputs(dn_class, dn_coord, aux_loss),
        "denoising_groups": denoising_groups,
        "max_gt_num_per_image": max_gt_num_per_image,
    }
    return matching_class, matching_coord, dn_metas


class DenoisingQueries(NamedTuple):
    """Denoising inputs of the decoder for one batch (in the order the official generator returns them).

    Attributes:
        label_query: ``[B, G * P, D]`` label embeddings of the noised labels (zeros in padding slots).
        box_query: ``[B, G * P, 4]`` noised cxcywh boxes in inverse-sigmoid (logit) form (zeros in padding
            slots); the decoder uses ``box_query.sigmoid()`` as reference points.
        attn_mask: bool ``[G * P + Q, G * P + Q]`` self-attention mask, ``True`` = blocked.
        denoising_groups: ``G``.
        max_gt_num_per_image: slots per group ``P = 2 * M`` (positives then negatives).
    """

    label_query: Tensor
    box_query: Tensor
    attn_mask: Tensor
    denoising_groups: int
    max_gt_num_per_image: int

    @property
    def num_denoising_queries(self) -> int:
        """``G * P``, the number of queries put before the matching queries."""
        return self.denoising_groups * self.max_gt_num_per_image

    def prepend_to(self, target: Tensor, reference_points: Tensor) -> tuple[Tensor, Tensor]:
        """Puts the denoising queries before the matching ones.

        Args:
            target: ``[B, Q, D]`` matching query contents.
            reference_points: ``[B, Q, 4]`` matching reference boxes (normalised cxcywh, after sigmoid).

        Returns:
            ``[B, G * P + Q, D]`` contents and ``[B, G * P + Q, 4]`` reference boxes.
        """
        target = torch.cat([self.label_query, target], dim=1)
        reference_points = torch.cat([self.box_query.sigmoid(), reference_points], dim=1)
        return target, reference_points

    def split(
        self, outputs_class: Tensor, outputs_coord: Tensor, aux_loss: bool = True
    ) -> tuple[Tensor, Tensor, dict[str, Any]]:
        """``split_denoising_outputs`` with this batch's ``G`` and ``P``."""
        return split_denoising_outputs(
            outputs_class, outputs_coord, self.denoising_groups, self.max_gt_num_per_image, aux_loss
        )


class ContrastiveDenoising(nn.Module):
    """Generates contrastive denoising queries from the ground truth of a batch (DINO's CDN).

    With ``M`` the most objects in one image, the batch gets ``G = max(1, denoising_nums // M)`` groups (``G = 1``
    when no image has objects) of ``P = 2 * M`` slots. Every copy of a label is replaced, with probability
    ``label_noise_prob / 2``, by a class drawn uniformly from ``[0, num_classes)`` (possibly itself). Every corner
    of a copied box moves by ``s * u * box_noise_scale`` times half the box's width (x) or height (y), with a random
    sign ``s``, ``u`` uniform in ``[0, 1)`` for positives and in ``[1, 2)`` for negatives; corners are clamped to
    ``[0, 1]``. Randomness comes from torch's global generator.

    Args:
        num_queries: number of matching queries ``Q`` (size of the attention mask).
        num_classes: number of classes ``C``.
        embed_dim: query dimension ``D``.
        denoising_nums: target number of denoising objects per image and group kind, ``G * M ~ denoising_nums``.
        label_noise_prob: twice the probability that a label is resampled.
        box_noise_scale: scale of the box noise (0 disables it).
    """

    def __init__(
        self,
        num_queries: int,
        num_classes: int,
        embed_dim: int,
        denoising_nums: int = 100,
        label_noise_prob: float = 0.5,
        box_noise_scale: float = 1.0,
    ):
        super().__init__()
        if not 0.0 <= label_noise_prob <= 1.0:
            raise ValueError(f"ContrastiveDenoising: label_noise_prob must be in [0, 1], got {label_noise_prob}")
        if box_noise_scale < 0 or denoising_nums < 0:
            raise ValueError(
                f"ContrastiveDenoising: box_noise_scale ({box_noise_scale}) and denoising_nums ({denoising_nums}) "
                "must be >= 0"
            )
        self.num_queries = num_queries
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.denoising_nums = denoising_nums
        self.label_noise_prob = label_noise_prob
        self.box_noise_scale = box_noise_scale
        self.label_encoder = nn.Embedding(num_classes, embed_dim)

    def extra_repr(self) -> str:
        return (
            f"num_queries={self.num_queries}, denoising_nums={self.denoising_nums}, "
            f"label_noise_prob={self.label_noise_prob}, box_noise_scale={self.box_noise_scale}"
        )

    def num_groups(self, max_objects: int) -> int:
        """``G = max(1, denoising_nums // M)`` for ``M = max_objects`` (1 when ``M`` is 0)."""
        if max_objects == 0:
            return 1
        return max(1, self.denoising_nums // max_objects)

    def noise_labels(self, labels: Tensor) -> Tensor:
        """Resamples each of ``labels`` (int64 ``[N]``) uniformly with probability ``label_noise_prob / 2``."""
        prob = self.label_noise_prob * 0.5
        if prob <= 0:
            return labels
        # uniform draws in the model's dtype (at least float32), as ``rand_like`` of the boxes below
        dtype = torch.promote_types(self.label_encoder.weight.dtype, torch.float32)
        resample = torch.rand(labels.shape, dtype=dtype, device=labels.device) < prob
        random_labels = torch.randint_like(labels, 0, self.num_classes)
        return torch.where(resample, random_labels, labels)

    def noise_boxes(self, boxes: Tensor, negative: Tensor) -> Tensor:
        """Moves the corners of ``boxes`` (normalised cxcywh ``[N, 4]``) by CDN noise.

        Args:
            boxes: ``[N, 4]`` normalised cxcywh boxes.
            negative: bool ``[N]``, ``True`` for negative copies (noise magnitude in ``[1, 2)`` instead of ``[0, 1)``).

        Returns:
            ``[N, 4]`` noised normalised cxcywh boxes (corners clamped to ``[0, 1]``).
        """
        if self.box_noise_scale <= 0:
            return boxes
        half_size = boxes[:, 2:] / 2
        max_shift = torch.cat([half_size, half_size], dim=1)
        sign = torch.randint_like(boxes, low=0, high=2) * 2.0 - 1.0
        magnitude = torch.rand_like(boxes) + negative[:, None].to(boxes.dtype)
        corners = box_cxcywh_to_xyxy(boxes) + (magnitude * sign) * max_shift * self.box_noise_scale
        return box_xyxy_to_cxcywh(corners.clamp(min=0.0, max=1.0))

    def forward(self, targets: Sequence[Mapping[str, Tensor]]) -> DenoisingQueries:
        """Noised queries, attention mask and group layout for a batch.

        Args:
            targets: ``B`` dicts with ``labels`` (int64 ``[N_b]`` in ``[0, C)``) and ``boxes`` (``[N_b, 4]``
                normalised cxcywh); ``N_b`` may be 0.

        Returns:
            ``DenoisingQueries`` with ``label_query`` ``[B, G * P, D]``, ``box_query`` ``[B, G * P, 4]``
            (inverse-sigmoid), ``attn_mask`` ``[G * P + Q, G * P + Q]``, ``G`` and ``P = 2 * M``.
        """
        labels, boxes, counts = self._concat_targets(targets)
        max_objects = max(counts)
        groups = self.num_groups(max_objects)
        copies = 2 * groups  # one positive and one negative copy of every object per group

        negative = torch.arange(copies, device=labels.device).repeat_interleave(labels.numel()) % 2 == 1
        noised_labels = self.noise_labels(labels.repeat(copies))
        noised_boxes = self.noise_boxes(boxes.repeat(copies, 1), negative)

        image_idx, slot_idx = self._slot_indices(counts, copies, max_objects, labels.device)
        num_dn = copies * max_objects
        label_query = self._scatter(self.label_encoder(noised_labels), image_idx, slot_idx, len(targets), num_dn)
        box_query = self._scatter(inverse_sigmoid(noised_boxes), image_idx, slot_idx, len(targets), num_dn)
        attn_mask = denoising_attn_mask(groups, 2 * max_objects, self.num_queries, labels.device)
        return DenoisingQueries(label_query, box_query, attn_mask, groups, 2 * max_objects)

    def _concat_targets(self, targets: Sequence[Mapping[str, Tensor]]) -> tuple[Tensor, Tensor, list[int]]:
        """Checks ``targets`` and returns all labels ``[N]``, boxes ``[N, 4]`` (image-major) and ``N_b`` per image."""
        if len(targets) == 0:
            raise ValueError("ContrastiveDenoising: got an empty list of targets (batch size 0)")
        for i, target in enumerate(targets):
            labels, boxes = target["labels"], target["boxes"]
            if labels.dim() != 1 or boxes.shape != (labels.numel(), 4):
                raise ValueError(
                    f"ContrastiveDenoising: targets[{i}] has labels {tuple(labels.shape)} and boxes "
                    f"{tuple(boxes.shape)}; expected [N] and [N, 4]"
                )
        labels = torch.cat([t["labels"] for t in targets]).long()
        boxes = torch.cat([t["boxes"] for t in targets])
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"ContrastiveDenoising: labels must be in [0, {self.num_classes}), got "
                f"[{labels.min().item()}, {labels.max().item()}]"
            )
        return labels, boxes, [t["labels"].numel() for t in targets]

    @staticmethod
    def _slot_indices(counts: list[int], copies: int, max_objects: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Image and slot of every copy, in the order ``(copy, image, object)`` of the repeated flat targets.

        Copy ``k`` of object ``j`` of image ``b`` goes to slot ``k * max_objects + j`` of image ``b``: even ``k``
        are the positives of group ``k // 2``, odd ``k`` its negatives.

        Returns:
            int64 ``[copies * N]`` image indices and slot indices.
        """
        num_per_image = torch.tensor(counts, dtype=torch.long, device=device)
        image_idx = torch.repeat_interleave(torch.arange(len(counts), device=device), num_per_image)
        object_idx = torch.cat([torch.arange(n, device=device) for n in counts])
        copy_offset = torch.arange(copies, device=device)[:, None] * max_objects
        return image_idx.repeat(copies), (copy_offset + object_idx[None, :]).flatten()

    @staticmethod
    def _scatter(values: Tensor, image_idx: Tensor, slot_idx: Tensor, batch_size: int, num_slots: int) -> Tensor:
        """Writes ``values`` ``[K, X]`` into a zero ``[batch_size, num_slots, X]`` at ``(image_idx, slot_idx)``."""
        out = values.new_zeros(batch_size, num_slots, values.shape[-1])
        out[image_idx, slot_idx] = values
        return out
