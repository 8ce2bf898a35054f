"""Turning the model-input dicts into a padded, normalised image batch, and output boxes back to original size.

Every meta-architecture of the project uses these helpers, so that all models agree on one convention:

* ``pixel_mean`` / ``pixel_std`` are buffers of shape ``[3, 1, 1]`` in **[0, 1] units** (e.g. ImageNet's
  ``(0.485, 0.456, 0.406)`` / ``(0.229, 0.224, 0.225)``); the uint8 image is divided by 255 first, then
  normalised as ``(image / 255 - mean) / std``.
* Padding is added bottom/right **after** normalisation, with zeros, up to the largest image of the batch
  rounded up to ``size_divisibility``. The padding mask is ``True`` on padded pixels (DETR convention).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageBatch",
    "batch_images",
    "pixel_stat_buffer",
    "rescale_boxes",
    "targets_from_inputs",
]

# ImageNet RGB statistics in [0, 1] units, the default normalisation of every model here.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageBatch(NamedTuple):
    """A padded, normalised batch of images.

    Attributes:
        images: float tensor ``[B, 3, Hp, Wp]``, normalised, zeros on padding.
        image_sizes: ``(h, w)`` of each image before padding (the size of its input ``image``).
        mask: bool tensor ``[B, Hp, Wp]``, ``True`` on padded pixels.
    """

    images: Tensor
    image_sizes: list[tuple[int, int]]
    mask: Tensor


def pixel_stat_buffer(values: Sequence[float], name: str, positive: bool = False) -> Tensor:
    """Builds a ``[3, 1, 1]`` float tensor for ``register_buffer`` from three per-channel values in [0, 1] units.

    Args:
        values: three numbers (RGB), in [0, 1] units.
        name: name of the argument, for the error messages.
        positive: require every value to be > 0 (for a std).

    Returns:
        float32 tensor ``[3, 1, 1]`` (a module buffer: ``module.double()`` / ``.half()`` convert it with the
        parameters, and the image batch follows its dtype).
    """
    tensor = torch.as_tensor(values, dtype=torch.float32).flatten()
    if tensor.numel() != 3:
        raise ValueError(f"{name} must have 3 values (RGB), got {list(values)}")
    if positive and bool((tensor <= 0).any()):
        raise ValueError(f"{name} must be positive, got {tensor.tolist()}")
    if bool((tensor.abs() > 1.5).any()):
        raise ValueError(f"{name} is given in [0, 1] units (e.g. 0.485), got {tensor.tolist()}; divide by 255")
    return tensor.view(3, 1, 1)


def _padded_size(sizes: list[tuple[int, int]], size_divisibility: int) -> tuple[int, int]:
    """Largest (h, w) of ``sizes`` rounded up to a multiple of ``size_divisibility`` (no rounding if <= 1)."""
    max_h = max(h for h, _ in sizes)
    max_w = max(w for _, w in sizes)
    if size_divisibility > 1:
        max_h = int(math.ceil(max_h / size_divisibility) * size_divisibility)
        max_w = int(math.ceil(max_w / size_divisibility) * size_divisibility)
    return max_h, max_w


def _checked_image(record: dict[str, Any]) -> Tensor:
    """The ``image`` of one input dict, checked to be a uint8 tensor ``[3, H, W]``."""
    image_id = record.get("image_id", "<no image_id>")
    image = record.get("image")
    if not isinstance(image, Tensor):
        raise KeyError(f"input of image_id={image_id!r} has no tensor under key 'image'")
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image of image_id={image_id!r} must be 3xHxW (RGB), got shape {tuple(image.shape)}")
    if image.dtype != torch.uint8:
        raise TypeError(f"image of image_id={image_id!r} must be uint8 (0..255), got {image.dtype}")
    return image


def batch_images(
    batched_inputs: Sequence[dict[str, Any]],
    pixel_mean: Tensor,
    pixel_std: Tensor,
    size_divisibility: int = 0,
) -> ImageBatch:
    """Moves the images to the device of ``pixel_mean``, normalises them and pads them into one tensor.

    Args:
        batched_inputs: model inputs, one dict per image, each with ``image`` (uint8 ``[3, H, W]``, RGB).
        pixel_mean: float ``[3, 1, 1]`` in [0, 1] units; its device is the output device.
        pixel_std: float ``[3, 1, 1]`` in [0, 1] units.
        size_divisibility: pad height and width up to a multiple of this (0 or 1: no rounding).

    Returns:
        ImageBatch: ``images`` ``[B, 3, Hp, Wp]`` float (zeros on padding), ``image_sizes`` (h, w) per image,
        ``mask`` ``[B, Hp, Wp]`` bool, ``True`` on padding.
    """
    if len(batched_inputs) == 0:
        raise ValueError("batched_inputs is empty; a batch needs at least one image")
    device = pixel_mean.device
    raw = [_checked_image(record) for record in batched_inputs]
    sizes = [(int(img.shape[1]), int(img.shape[2])) for img in raw]
    pad_h, pad_w = _padded_size(sizes, size_divisibility)
    images = torch.zeros(len(raw), 3, pad_h, pad_w, dtype=pixel_mean.dtype, device=device)
    mask = torch.ones(len(raw), pad_h, pad_w, dtype=torch.bool, device=device)
    scale = pixel_std * 255.0
    for i, (img, (h, w)) in enumerate(zip(raw, sizes)):
        img = img.to(device, non_blocking=True).to(pixel_mean.dtype)
        images[i, :, :h, :w] = (img - pixel_mean * 255.0) / scale
        mask[i, :h, :w] = False
    return ImageBatch(images, sizes, mask)


def rescale_boxes(boxes: Tensor, input_size: tuple[int, int], output_size: tuple[int, int]) -> Tensor:
    """Rescales xyxy boxes from the input image's pixels to the original image's pixels and clips them.

    Args:
        boxes: float ``[N, 4]`` xyxy, pixels of the (resized) input image of size ``input_size``.
        input_size: ``(h, w)`` of the input image the boxes refer to.
        output_size: ``(height, width)`` of the original image.

    Returns:
        float ``[N, 4]`` xyxy in pixels of the original image, clipped to ``[0, width] x [0, height]``.
    """
    in_h, in_w = input_size
    out_h, out_w = output_size
    scale = boxes.new_tensor([out_w / in_w, out_h / in_h, out_w / in_w, out_h / in_h])
    boxes = boxes * scale
    upper = boxes.new_tensor([out_w, out_h, out_w, out_h])
    return torch.minimum(boxes.clamp(min=0), upper)


def _checked_target(
    record: dict[str, Any], num_classes: int | None, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """``boxes`` ``[N, 4]`` (``dtype``) and ``labels`` ``[N]`` of one training input, with their shapes and values
    checked."""
    image_id = record.get("image_id", "<no image_id>")
    for key in ("boxes", "labels"):
        if key not in record:
            raise KeyError(f"training input of image_id={image_id!r} has no {key!r} (needed in training mode)")
    boxes = torch.as_tensor(record["boxes"], dtype=dtype)
    labels = torch.as_tensor(record["labels"], dtype=torch.int64)
    if boxes.numel() == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes of image_id={image_id!r} must be [N, 4] xyxy, got shape {tuple(boxes.shape)}")
    if labels.dim() != 1 or labels.shape[0] != boxes.shape[0]:
        raise ValueError(f"image_id={image_id!r} has {boxes.shape[0]} boxes but labels of shape {tuple(labels.shape)}")
    if num_classes is not None and labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels of image_id={image_id!r} must be in 0..{num_classes - 1}, got {labels.tolist()}")
    return boxes, labels


def targets_from_inputs(
    batched_inputs: Sequence[dict[str, Any]],
    device: torch.device | str,
    num_classes: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[dict[str, Tensor]]:
    """Collects the training targets of a batch, checked and moved to ``device``.

    Args:
        batched_inputs: model inputs, each with ``boxes`` (float ``[N, 4]`` xyxy, pixels of ``image``; N may be 0)
            and ``labels`` (int64 ``[N]``).
        device: device of the returned tensors.
        num_classes: if given, labels must lie in ``0..num_classes-1``.
        dtype: floating dtype of the returned boxes (float32 by default; float64 for a float64 model).

    Returns:
        One dict per image: ``boxes`` ``[N, 4]`` of ``dtype``, ``labels`` int64 ``[N]``.

    Raises:
        KeyError: an input lacks ``boxes`` or ``labels`` (the message names its ``image_id``).
        ValueError: wrong shapes, mismatched lengths or out-of-range labels (the message names its ``image_id``).
    """
    targets = []
    for record in batched_inputs:
        boxes, labels = _checked_target(record, num_classes, dtype)
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return targets
