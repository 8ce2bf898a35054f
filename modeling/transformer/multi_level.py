"""Flattening multi-level feature maps into one token sequence, and the geometry that goes with it.

Conventions used by every module of :mod:`modeling.transformer`:

* ``L`` levels, finest first; level ``l`` has ``(h_l, w_l)`` cells; ``S = sum_l h_l * w_l`` tokens in total,
  level after level, each level row-major.
* Masks are ``True`` on padded cells (DETR convention).
* A *valid ratio* is the unpadded fraction of a level along one axis, stored ``(x, y)``: ``[B, L, 2]``.
* Normalised coordinates are ``(x, y)`` in ``[0, 1]`` over the padded map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from modeling.box_ops import INVERSE_SIGMOID_EPS, inverse_sigmoid

__all__ = [
    "INVERSE_SIGMOID_EPS",
    "MultiLevelTokens",
    "encoder_reference_points",
    "flatten_levels",
    "inverse_sigmoid",
    "level_masks_from_image_mask",
    "unflatten_levels",
    "valid_ratios",
]


class MultiLevelTokens(NamedTuple):
    """Multi-level inputs of a transformer, flattened into token sequences.

    Attributes:
        feats: ``[B, S, E]`` features.
        pos: ``[B, S, E]`` position embeddings (level embedding included).
        mask: ``[B, S]`` bool, ``True`` on padded tokens.
        level_masks: per level, ``[B, h_l, w_l]`` bool masks (the unflattened ``mask``).
        spatial_shapes: ``[L, 2]`` int64 ``(h_l, w_l)``.
        level_start_index: ``[L]`` int64 offset of each level in ``S``.
        valid_ratios: ``[B, L, 2]`` float ``(x, y)`` unpadded fractions.
    """

    feats: Tensor
    pos: Tensor
    mask: Tensor
    level_masks: list[Tensor]
    spatial_shapes: Tensor
    level_start_index: Tensor
    valid_ratios: Tensor

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """``(h_l, w_l)`` of every level as Python ints."""
        return [(int(h), int(w)) for h, w in self.spatial_shapes.tolist()]

    @property
    def level_sizes(self) -> list[int]:
        """``h_l * w_l`` of every level."""
        return [h * w for h, w in self.shapes]


def flatten_levels(maps: Sequence[Tensor]) -> Tensor:
    """Concatenates per-level maps into a token sequence.

    Args:
        maps: per level, ``[B, C, h_l, w_l]`` features or ``[B, h_l, w_l]`` masks.

    Returns:
        ``[B, S, C]`` for features, ``[B, S]`` for masks.
    """
    flat = torch.cat([m.flatten(-2) for m in maps], dim=-1)
    return flat.transpose(1, 2) if flat.dim() == 3 else flat


def unflatten_levels(tokens: Tensor, shapes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """Inverse of :func:`flatten_levels` for features.

    Args:
        tokens: ``[B, S, C]``.
        shapes: ``(h_l, w_l)`` of every level.

    Returns:
        per level, ``[B, C, h_l, w_l]`` (contiguous).
    """
    batch, _, channels = tokens.shape
    chunks = tokens.split([h * w for h, w in shapes], dim=1)
    return [c.transpose(1, 2).contiguous().reshape(batch, channels, h, w) for c, (h, w) in zip(chunks, shapes)]


def level_masks_from_image_mask(mask: Tensor, shapes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """Padding masks of every level, by nearest-neighbour resizing of the image mask.

    The resizing is done in float32 for models of every dtype: the result is a bool mask, and the source pixels
    that nearest-neighbour interpolation picks depend on the dtype (float64 picks other pixels than float32 for
    some sizes), so a float64 model keeps the masks of the float32 model and of the official implementations.

    Args:
        mask: ``[B, H, W]`` bool, ``True`` on padded pixels.
        shapes: ``(h_l, w_l)`` of every level.

    Returns:
        per level, ``[B, h_l, w_l]`` bool.
    """
    as_float = mask[None].float()
    return [F.interpolate(as_float, size=shape).to(torch.bool)[0] for shape in shapes]


def valid_ratios(level_masks: Sequence[Tensor], dtype: torch.dtype = torch.float32) -> Tensor:
    """Unpadded fraction of each level, from its first column (height) and first row (width).

    Args:
        level_masks: per level, ``[B, h_l, w_l]`` bool.
        dtype: floating dtype of the result (float32, or float64 for a float64 model).

    Returns:
        ``[B, L, 2]`` ``(valid_w / w_l, valid_h / h_l)`` of ``dtype``.
    """
    ratios = []
    for mask in level_masks:
        _, height, width = mask.shape
        valid_h = (~mask[:, :, 0]).sum(1).to(dtype) / height
        valid_w = (~mask[:, 0, :]).sum(1).to(dtype) / width
        ratios.append(torch.stack([valid_w, valid_h], dim=-1))
    return torch.stack(ratios, dim=1)


def encoder_reference_points(shapes: Sequence[tuple[int, int]], ratios: Tensor) -> Tensor:
    """Reference points of the encoder tokens: each cell centre, normalised by its image's valid size.

    The centre ``(j + 0.5, i + 0.5)`` of a cell of level ``l`` is divided by the valid size of level ``l``; the
    result is then rescaled to every level ``k`` by that level's valid ratios.

    Args:
        shapes: ``(h_l, w_l)`` of every level.
        ratios: ``[B, L, 2]`` valid ratios.

    Returns:
        ``[B, S, L, 2]`` normalised ``(x, y)``, in the dtype of ``ratios``.
    """
    points = []
    for level, (height, width) in enumerate(shapes):
        ys = torch.arange(height, dtype=ratios.dtype, device=ratios.device) + 0.5
        xs = torch.arange(width, dtype=ratios.dtype, device=ratios.device) + 0.5
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        ref_y = grid_y.reshape(-1)[None] / (ratios[:, None, level, 1] * height)
        ref_x = grid_x.reshape(-1)[None] / (ratios[:, None, level, 0] * width)
        points.append(torch.stack([ref_x, ref_y], dim=-1))
    return torch.cat(points, dim=1)[:, :, None] * ratios[:, None]
