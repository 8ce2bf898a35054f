"""Inference from Python on single images, like detectron2's ``DefaultPredictor``.

    from engine.predictor import DefaultPredictor

    predictor = DefaultPredictor.from_config("output/my_run/config.yaml", "output/my_run/model_final.pth")
    detections = predictor("photo.jpg")          # a path, a PIL image, a numpy array or a tensor
    for box, score, name in zip(detections.boxes, detections.scores, detections.class_names):
        ...

The image goes through the config's test-time resize (``dataloader.test.mapper``); boxes come back in pixels of
the image given. Class names and the dataset's category ids come, in this order, from the ``class_names``
argument, from the checkpoint (``tools/train_net.py`` stores the training data's categories in every
checkpoint), or from the metadata of the config's test dataset; else the labels are their own names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from core.device import autocast, resolve_device
from core.lazy import instantiate
from data import read_image

from .checkpoint import DetectionCheckpointer
from .data_setup import dataset_categories, setup_datasets
from .defaults import load_config

__all__ = ["DefaultPredictor", "Detections", "as_image_tensor", "build_model", "fuse_for_inference"]

logger = logging.getLogger(__name__)


@dataclass
class Detections:
    """The detections of one image, best first.

    Attributes:
        boxes: float32 ``[N, 4]``, ``x0, y0, x1, y1`` in pixels of the image given to the predictor.
        scores: float32 ``[N]``.
        labels: int64 ``[N]``, the model's contiguous class indices ``0..C-1``.
        category_ids: the dataset's category id of each detection (``N`` ints).
        class_names: the class name of each detection (``N`` strings).
        image_size: ``(height, width)`` of the image.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    category_ids: list[int] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return int(self.scores.numel())

    def above(self, threshold: float) -> Detections:
        """The detections scoring at least ``threshold``."""
        keep = (self.scores >= threshold).nonzero().flatten().tolist()
        return Detections(
            self.boxes[keep],
            self.scores[keep],
            self.labels[keep],
            [self.category_ids[i] for i in keep],
            [self.class_names[i] for i in keep],
            self.image_size,
        )

    def to_coco(self, **extra: Any) -> list[dict]:
        """COCO results (``bbox`` as ``[x, y, w, h]``, the dataset's ``category_id``, ``score``, ``class_name``).

        Args:
            extra: keys added to every entry, e.g. ``image_id=3`` or ``file_name="a.jpg"``.
        """
        xywh = self.boxes.clone()
        xywh[:, 2:] -= xywh[:, :2]
        return [
            {**extra, "category_id": cat, "class_name": name, "bbox": box, "score": score}
            for box, score, cat, name in zip(xywh.tolist(), self.scores.tolist(), self.category_ids, self.class_names)
        ]


def as_image_tensor(image: Any, image_format: str = "RGB") -> torch.Tensor:
    """An image as the model's uint8 ``[3, H, W]`` RGB tensor.

    Args:
        image: a file path; a PIL image; a numpy array ``[H, W, 3]`` or ``[H, W]`` (uint8, or float in [0, 1]);
            a tensor ``[3, H, W]`` (uint8, or float in [0, 1]).
        image_format: channel order of numpy arrays and tensors, ``"RGB"`` or ``"BGR"`` (OpenCV's order).

    Raises:
        TypeError / ValueError: an input of another kind or shape (the message says what was given).
    """
    if image_format not in ("RGB", "BGR"):
        raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    if isinstance(image, (str, os.PathLike)):
        return read_image(os.fspath(image))
    if _is_pil(image):
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).contiguous()
    if isinstance(image, np.ndarray):
        array = image[..., None].repeat(3, axis=-1) if image.ndim == 2 else image
        if array.ndim != 3 or array.shape[-1] != 3:
            raise ValueError(f"a numpy image must be [H, W, 3] or [H, W], got shape {image.shape}")
        tensor = torch.from_numpy(np.array(array)).permute(2, 0, 1)  # a copy: the array may be read-only
    elif isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"a tensor image must be [3, H, W], got shape {tuple(image.shape)}")
        tensor = image.detach().cpu()
    else:
        raise TypeError(f"cannot read an image from a {type(image).__name__} (give a path, PIL image, array or tensor)")
    if tensor.dtype != torch.uint8:
        if not tensor.is_floating_point():
            raise TypeError(f"image values must be uint8 or float in [0, 1], got {tensor.dtype}")
        tensor = (tensor.float().clamp(0, 1) * 255).round().to(torch.uint8)
    if image_format == "BGR":
        tensor = tensor.flip(0)
    return tensor.contiguous()


def _is_pil(image: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a requirement
        return False
    return isinstance(image, Image.Image)


def fuse_for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """The model's own ``fuse_for_inference()`` (``TwoStageDETR``: batch norms folded into the convolutions,
    RepVGG branches merged), in place, for inference only (the model must be in eval mode; it cannot train
    afterwards). The outputs stay the same up to float rounding."""
    fuse = getattr(model, "fuse_for_inference", None)
    if fuse is None:
        raise TypeError(f"{type(model).__name__} has no fuse_for_inference(); run it without --fuse / fuse=True")
    return fuse()


def build_model(cfg: DictConfig, weights: str | None = None, device: str | torch.device = "cpu", fuse: bool = False):
    """The config's model in eval mode on ``device``: the one builder of the predictor and the scripts.

    With ``weights``, every model tensor must come from that checkpoint (``mode="eval"`` of
    :class:`~engine.checkpoint.DetectionCheckpointer`), so the pretrained backbone weights are not loaded (no
    download). With ``fuse``, the loaded model is fused for inference (:func:`fuse_for_inference`).

    Returns:
        ``(model, the checkpoint's other entries)`` (``{}`` without ``weights``).
    """
    if weights and OmegaConf.select(cfg, "model.backbone.weights", default=None) is not None:
        cfg.model.backbone.weights = None  # the checkpoint holds the backbone: no pretrained download
    model = instantiate(cfg.model)
    checkpoint = DetectionCheckpointer(model).load(weights, mode="eval") if weights else {}
    model = model.to(resolve_device(device)).eval()
    if fuse:
        fuse_for_inference(model)
    return model, checkpoint


class DefaultPredictor:
    """A model of a config with its weights, in eval mode, called on images.

    Args:
        cfg: the LazyConfig (e.g. a training run's ``config.yaml``, loaded).
        weights: checkpoint of the config's model; every model tensor must come from it.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a torch device.
        class_names: names of the model's classes (replaces those of the checkpoint or dataset).
        image_format: channel order of numpy arrays and tensors given to ``__call__``.
        fuse: fold the batch norms into the convolutions and merge re-parameterisable blocks
            (:func:`fuse_for_inference`): faster, the same detections up to float rounding.
        amp: run the model under autocast (bfloat16 on a CPU, float16 on CUDA), as ``train.amp.enabled`` trains.
    """

    def __init__(
        self,
        cfg: DictConfig,
        weights: str,
        device: str | torch.device = "auto",
        class_names: Sequence[str] | None = None,
        image_format: str = "RGB",
        fuse: bool = False,
        amp: bool = False,
    ) -> None:
        self.cfg = cfg
        self.amp = amp
        self.device = resolve_device(device)
        self.image_format = image_format
        if OmegaConf.select(cfg, "model.num_classes", default=0) is None:
            setup_datasets(cfg, ("test",))  # num_classes from the data
        self.model, checkpoint = build_model(cfg, weights, self.device, fuse=fuse)
        self.mapper = instantiate(cfg.dataloader.test.mapper)
        self.metadata = self._categories(checkpoint.get("metadata"), class_names)

    @classmethod
    def from_config(cls, config_file: str, weights: str, opts: Sequence[str] = (), **kwargs: Any) -> DefaultPredictor:
        """Loads ``config_file`` (``.py`` or ``config.yaml``), applies ``key=value`` overrides, builds the predictor."""
        return cls(load_config(config_file, opts), weights, **kwargs)

    @property
    def num_classes(self) -> int | None:
        value = getattr(self.model, "num_classes", None)
        return int(value) if isinstance(value, int) else None

    @property
    def class_names(self) -> list[str]:
        """The names of the model's classes, label ``k`` at index ``k``."""
        return list(self.metadata["thing_classes"])

    def _categories(self, stored: Mapping | None, class_names: Sequence[str] | None) -> dict:
        """``thing_classes`` and ``label -> category id`` from the argument, the checkpoint or the test dataset."""
        found = dict(stored) if stored else self._dataset_categories()
        names = list(class_names) if class_names else list(found.get("thing_classes") or [])
        id_map = found.get("thing_dataset_id_to_contiguous_id") or {}
        to_dataset = {int(c): int(d) for d, c in id_map.items()}
        count = max(self.num_classes or 0, len(names))
        if class_names and self.num_classes is not None and len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names given, but the model has {self.num_classes} classes")
        names += [str(i) for i in range(len(names), count)]
        return {"thing_classes": names, "label_to_category_id": {k: to_dataset.get(k, k) for k in range(count)}}

    def _dataset_categories(self) -> dict:
        """Categories of the config's test dataset, or ``{}`` when they cannot be read (logged)."""
        try:
            setup_datasets(self.cfg, ())
            return dataset_categories(self.cfg, "test")
        except (OSError, ValueError, KeyError) as e:
            logger.warning(f"No class names in the checkpoint, and the config's test dataset cannot tell them: {e}")
            return {}

    @torch.no_grad()
    def __call__(self, image: Any) -> Detections | list[Detections]:
        """Detects objects in one image, or in each image of a list (run as one batch).

        Args:
            image: see :func:`as_image_tensor`; or a list of such images.
        """
        if isinstance(image, (list, tuple)):
            return self._predict([as_image_tensor(i, self.image_format) for i in image])
        return self._predict([as_image_tensor(image, self.image_format)])[0]

    def _predict(self, images: list[torch.Tensor]) -> list[Detections]:
        with autocast(self.device, enabled=self.amp):
            outputs = self.model([self.mapper.inference_input(img) for img in images])
        return [self._detections(out, tuple(img.shape[-2:])) for out, img in zip(outputs, images)]

    def _detections(self, output: dict, size: tuple[int, int]) -> Detections:
        order = output["scores"].argsort(descending=True)
        labels = output["labels"][order].cpu().to(torch.int64)
        names, to_dataset = self.metadata["thing_classes"], self.metadata["label_to_category_id"]
        return Detections(
            boxes=output["boxes"][order].float().cpu(),
            scores=output["scores"][order].float().cpu(),
            labels=labels,
            category_ids=[to_dataset.get(k, k) for k in labels.tolist()],
            class_names=[names[k] if k < len(names) else str(k) for k in labels.tolist()],
            image_size=size,
        )
