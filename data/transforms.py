"""Detection augmentations on ``torchvision.transforms.v2``, with detectron2's semantics.

Every transform here takes one *sample* dict and returns a new one::

    {"image": tv_tensors.Image (uint8, 3xHxW),
     "boxes": tv_tensors.BoundingBoxes (XYXY, canvas_size=(H, W)), optional,
     "labels": torch.Tensor (int64, [N]), optional,
     ...}  # anything else passes through untouched

Only ``tv_tensors.Image`` and ``tv_tensors.BoundingBoxes`` are transformed (a plain tensor such as ``labels``
is never mistaken for an image). Geometry goes through ``torchvision.transforms.v2.functional`` so the boxes
follow the image exactly. Crops additionally drop the boxes they cut away, together with their labels.

Randomness comes from torch's global CPU generator only, so seeding it (as :class:`data.build.MapDataset`
does per stream position) fixes every draw.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

__all__ = [
    "DEFAULT_MIN_BOX_SIZE",
    "Crop",
    "RandomChoice",
    "RandomCrop",
    "RandomFlip",
    "ResizeShortestEdge",
    "build_augmentation",
    "drop_small_boxes",
    "shortest_edge_size",
]

# A box narrower or shorter than one pixel after cropping shows (almost) nothing of its object; DETR-style
# training would only learn noise from it. One pixel also keeps thin but real objects (scratches, 1-2 px wide).
DEFAULT_MIN_BOX_SIZE = 1.0

RandomChoice = v2.RandomChoice  # picks one of several transforms (e.g. plain list vs crop list) with given p


class _DetectionTransform(v2.Transform):
    """Base class: transforms images and boxes, passes everything else (labels, ids) through."""

    _transformed_types = (tv_tensors.Image, tv_tensors.BoundingBoxes)


def _image_size(flat_inputs: list[Any]) -> tuple[int, int]:
    """Returns ``(H, W)`` of the (first) image of a flattened sample."""
    for inpt in flat_inputs:
        if isinstance(inpt, tv_tensors.Image):
            h, w = F.get_size(inpt)
            return int(h), int(w)
    raise TypeError("The sample holds no tv_tensors.Image; wrap the image with tv_tensors.Image(...)")


def drop_small_boxes(sample: dict[str, Any], min_size: float) -> dict[str, Any]:
    """Removes boxes whose width or height is below ``min_size`` and the labels at the same positions.

    Args:
        sample: dict with optional ``boxes`` (BoundingBoxes XYXY, [N, 4]) and ``labels`` ([N]).
        min_size: smallest kept width and height, in pixels.

    Returns:
        A new dict; ``boxes`` and ``labels`` have the same M <= N rows, in the original order.
    """
    if not isinstance(sample, dict):
        raise TypeError(f"Detection transforms take a sample dict, got {type(sample).__name__}")
    boxes = sample.get("boxes")
    if boxes is None:
        return sample
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    out = dict(sample)
    out["boxes"] = tv_tensors.wrap(boxes[keep], like=boxes)
    if "labels" in sample:
        out["labels"] = sample["labels"][keep]
    return out


class RandomFlip(_DetectionTransform):
    """Flips image and boxes horizontally (or vertically) with probability ``prob``.

    Args:
        prob: probability of flipping.
        horizontal: flip left-right; ``vertical`` flips top-bottom. Exactly one must be true.
    """

    def __init__(self, prob: float = 0.5, *, horizontal: bool = True, vertical: bool = False) -> None:
        super().__init__()
        if horizontal == vertical:
            raise ValueError(f"RandomFlip needs exactly one of horizontal/vertical, got {horizontal=}, {vertical=}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandomFlip prob must be in [0, 1], got {prob}")
        self.prob = prob
        self.horizontal = horizontal

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"flip": bool(torch.rand(()) < self.prob)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params["flip"]:
            return inpt
        return F.horizontal_flip(inpt) if self.horizontal else F.vertical_flip(inpt)


def shortest_edge_size(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """Output ``(new_h, new_w)`` of detectron2's ResizeShortestEdge for a short edge of ``short``."""
    scale = short / min(h, w)
    if max(h, w) * scale > max_size:
        scale = max_size / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


class ResizeShortestEdge(_DetectionTransform):
    """Resizes so the short edge has a sampled length, keeping the long edge <= ``max_size``.

    Boxes scale with the image: x by ``new_w / w``, y by ``new_h / h``.

    Args:
        short_edge_length: an int, or a sequence of ints: candidates (``"choice"``) or ``(min, max)`` (``"range"``).
        max_size: upper bound of the long edge after resizing.
        sample_style: ``"choice"`` picks one of the lengths; ``"range"`` draws a uniform int in [min, max].
        interpolation: image interpolation (bilinear with antialiasing by default).
    """

    def __init__(
        self,
        short_edge_length: int | Sequence[int],
        max_size: int = sys.maxsize,
        sample_style: str = "range",
        interpolation: v2.InterpolationMode = v2.InterpolationMode.BILINEAR,
    ) -> None:
        super().__init__()
        if sample_style not in ("range", "choice"):
            raise ValueError(f"ResizeShortestEdge sample_style must be 'range' or 'choice', got {sample_style!r}")
        lengths = [int(short_edge_length)] * 2 if isinstance(short_edge_length, int) else list(short_edge_length)
        if sample_style == "range" and len(lengths) != 2:
            raise ValueError(f"sample_style='range' needs (min, max) short edge lengths, got {short_edge_length!r}")
        if not lengths or min(lengths) <= 0:
            raise ValueError(f"ResizeShortestEdge needs positive short edge lengths, got {short_edge_length!r}")
        self.short_edge_length = tuple(lengths)
        self.max_size = int(max_size)
        self.sample_style = sample_style
        self.interpolation = interpolation

    def _sample_short_edge(self) -> int:
        if self.sample_style == "range":
            low, high = self.short_edge_length
            return int(torch.randint(low, high + 1, ()))
        return self.short_edge_length[int(torch.randint(len(self.short_edge_length), ()))]

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _image_size(flat_inputs)
        return {"size": list(shortest_edge_size(h, w, self._sample_short_edge(), self.max_size))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return F.resize(inpt, params["size"], interpolation=self.interpolation, antialias=True)


class _CropTransform(_DetectionTransform):
    """Crops image and boxes to ``params`` (top, left, height, width); then drops boxes cut below min size."""

    def __init__(self, min_box_size: float) -> None:
        super().__init__()
        self.min_box_size = float(min_box_size)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return F.crop(inpt, params["top"], params["left"], params["height"], params["width"])

    def forward(self, *inputs: Any) -> Any:
        if len(inputs) != 1:
            raise TypeError(f"{type(self).__name__} takes one sample dict, got {len(inputs)} inputs")
        return drop_small_boxes(super().forward(inputs[0]), self.min_box_size)


class Crop(_CropTransform):
    """Deterministic crop of the window at ``(top, left)`` of size ``(height, width)``.

    Boxes are shifted and clipped to the window; those left thinner than ``min_box_size`` are dropped.
    """

    def __init__(self, top: int, left: int, height: int, width: int, min_box_size: float = DEFAULT_MIN_BOX_SIZE):
        super().__init__(min_box_size)
        self.top, self.left, self.height, self.width = int(top), int(left), int(height), int(width)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"top": self.top, "left": self.left, "height": self.height, "width": self.width}


class RandomCrop(_CropTransform):
    """Random crop with detectron2's crop types; boxes are clipped, cut-away ones dropped with their labels.

    Args:
        crop_type: ``"absolute"``: fixed ``(h, w)`` clipped to the image; ``"absolute_range"``: h uniform int in
            ``[min(crop_size[0], H), min(crop_size[1], H)]``, w likewise with W; ``"relative"``: fixed fractions
            ``(h/H, w/W)``; ``"relative_range"``: fractions uniform in ``[crop_size[i], 1]``.
        crop_size: two numbers whose meaning depends on ``crop_type``.
        min_box_size: boxes whose width or height falls below this (pixels) after clipping are removed.
    """

    CROP_TYPES = ("absolute", "absolute_range", "relative", "relative_range")

    def __init__(
        self,
        crop_type: str = "absolute_range",
        crop_size: Sequence[float] = (384, 600),
        min_box_size: float = DEFAULT_MIN_BOX_SIZE,
    ) -> None:
        super().__init__(min_box_size)
        if crop_type not in self.CROP_TYPES:
            raise ValueError(f"RandomCrop crop_type must be one of {self.CROP_TYPES}, got {crop_type!r}")
        if len(crop_size) != 2:
            raise ValueError(f"RandomCrop crop_size needs two numbers, got {crop_size!r}")
        if crop_type.startswith("relative") and not all(0 < s <= 1 for s in crop_size):
            raise ValueError(f"RandomCrop '{crop_type}' needs fractions in (0, 1], got {crop_size!r}")
        if crop_type == "absolute_range" and not 0 < crop_size[0] <= crop_size[1]:
            raise ValueError(f"RandomCrop 'absolute_range' needs 0 < min <= max, got {crop_size!r}")
        self.crop_type = crop_type
        self.crop_size = tuple(crop_size)

    def crop_hw(self, h: int, w: int) -> tuple[int, int]:
        """Samples the crop ``(height, width)`` for an ``h x w`` image (never larger than the image)."""
        a, b = self.crop_size
        if self.crop_type == "absolute":
            return min(int(a), h), min(int(b), w)
        if self.crop_type == "absolute_range":
            ch = int(torch.randint(min(int(a), h), min(int(b), h) + 1, ()))
            cw = int(torch.randint(min(int(a), w), min(int(b), w) + 1, ()))
            return ch, cw
        frac_h, frac_w = a, b
        if self.crop_type == "relative_range":
            u = torch.rand(2).tolist()
            frac_h, frac_w = a + u[0] * (1 - a), b + u[1] * (1 - b)
        return max(1, int(h * frac_h + 0.5)), max(1, int(w * frac_w + 0.5))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _image_size(flat_inputs)
        ch, cw = self.crop_hw(h, w)
        top = int(torch.randint(h - ch + 1, ()))
        left = int(torch.randint(w - cw + 1, ()))
        return {"top": top, "left": left, "height": ch, "width": cw}


class _Identity(v2.Transform):
    def forward(self, *inputs: Any) -> Any:
        return inputs if len(inputs) > 1 else inputs[0]


def build_augmentation(augmentation: v2.Transform | Sequence[v2.Transform] | None) -> v2.Transform:
    """Composes a list of transforms applied in order (an empty list or None is the identity)."""
    if augmentation is None:
        return _Identity()
    if isinstance(augmentation, v2.Transform):
        return augmentation
    augmentation = list(augmentation)
    for t in augmentation:
        if not callable(t):
            raise TypeError(f"Augmentation {t!r} is not callable; did the config forget to instantiate it?")
    return v2.Compose(augmentation) if augmentation else _Identity()
