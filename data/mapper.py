"""Maps a dataset dict to the model's input dict (image tensor + targets), DETR style."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from .transforms import RandomChoice, build_augmentation

__all__ = ["IMAGE_EXTENSIONS", "DetrDatasetMapper", "read_image", "read_image_size", "annotations_to_targets"]

#: file extensions (lower case) of the images the project reads: what :func:`read_image` decodes
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp")
# formats torchvision's decoder reads (PIL reads the others, e.g. BMP and TIFF); it applies the EXIF orientation
# to the first three only
_TORCHVISION_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF")
_TORCHVISION_EXIF_FORMATS = ("JPEG", "MPO", "PNG")


def read_image(file_name: str) -> torch.Tensor:
    """Reads an image file as RGB with its EXIF orientation applied where the decoder applies it.

    torchvision's decoder reads JPEG, PNG, WEBP and GIF and applies the EXIF orientation to JPEG and PNG; PIL reads
    the other formats (e.g. BMP, TIFF) as it loads them (recent Pillow applies a TIFF's orientation itself).

    Returns:
        uint8 tensor of shape [3, H, W].

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded as an image.
    """
    try:
        with open(file_name, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"Image file not found: {file_name}") from None
    if not data:
        raise ValueError(f"Cannot decode image {file_name}: the file is empty")
    try:
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of torchcodec
            warnings.filterwarnings("ignore", message="The image decoding", category=DeprecationWarning)
            buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            return decode_image(buffer, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except RuntimeError as e:
        decoded = _read_with_pil(data)
        if decoded is None:
            raise ValueError(f"Cannot decode image {file_name}: {e}") from e
        return decoded


def _read_with_pil(data: bytes) -> torch.Tensor | None:
    """``[3, H, W]`` uint8 RGB of an image in a format torchvision does not decode, as PIL loads it; None when PIL
    cannot read it either, or when it is a format torchvision reads (then the file is broken)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format in _TORCHVISION_FORMATS:
                return None
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).contiguous()


_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that rotate by 90 degrees


def read_image_size(file_name: str) -> tuple[int, int]:
    """``(height, width)`` of an image file as :func:`read_image` returns it, from its header only.

    The pixels are not decoded: PIL parses the header (and the EXIF orientation, which swaps height and width
    for the rotating orientations where :func:`read_image` applies it: JPEG and PNG; PIL's own size otherwise).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the header cannot be parsed as an image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file_name) as img:
            width, height = img.size
            orientation = _exif_orientation(img)
    except FileNotFoundError:
        raise FileNotFoundError(f"Image file not found: {file_name}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"Cannot read the image header of {file_name}: {e}") from e
    if orientation in _TRANSPOSING_ORIENTATIONS:
        height, width = width, height
    return int(height), int(width)


def _exif_orientation(img) -> int:
    """The EXIF orientation of an opened PIL image as :func:`read_image` applies it, without decoding pixels.

    For a PNG, PIL's ``getexif()`` decodes the whole image to look for an eXIf chunk after the pixel data; the
    chunk before the pixels (in ``img.info``, the one torchvision's decoder applies) is read instead.
    """
    from PIL import Image

    if img.format not in _TORCHVISION_EXIF_FORMATS:
        return 1  # read_image does not rotate it, or PIL's size already is the loaded one
    if img.format != "PNG":
        return int(img.getexif().get(_EXIF_ORIENTATION, 1))
    exif = Image.Exif()
    raw = img.info.get("exif")
    if raw:
        exif.load(raw)
    return int(exif.get(_EXIF_ORIENTATION, 1))


def _check_image_size(dataset_dict: dict, image: torch.Tensor) -> None:
    h, w = image.shape[-2:]
    expected = (dataset_dict.get("height", h), dataset_dict.get("width", w))
    if (h, w) != expected:
        raise ValueError(
            f"Image {dataset_dict['file_name']} has size (h={h}, w={w}) but its dataset dict says "
            f"(h={expected[0]}, w={expected[1]})"
        )


def annotations_to_targets(annotations: list[dict], image_size: tuple[int, int]) -> dict:
    """Converts non-crowd annotations to XYXY boxes and labels.

    Args:
        annotations: dataset-dict annotations (``bbox`` XYWH absolute, ``category_id``, ``iscrowd``).
        image_size: ``(H, W)`` of the image the boxes belong to.

    Returns:
        ``{"boxes": BoundingBoxes float32 [N, 4] XYXY, "labels": int64 [N]}`` (crowd annotations dropped).
    """
    anns = [a for a in annotations if not a.get("iscrowd", 0)]
    xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
    boxes = torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
    return {
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=tuple(image_size)),
        "labels": labels,
    }


class DetrDatasetMapper:
    """Reads the image, applies DETR's augmentations and produces the model's input dict.

    In training, with probability 0.5 each, either ``augmentation`` or ``augmentation_with_crop`` is applied
    (always ``augmentation`` when the latter is None); crowd annotations are dropped and the output holds
    ``boxes`` (float32 [N, 4], XYXY in pixels of the augmented image) and ``labels`` (int64 [N]). At test
    time only ``augmentation`` (the test resize) is applied and no annotations are returned.

    Args:
        augmentation: list of transforms (see :mod:`data.transforms`) applied in order.
        augmentation_with_crop: alternative list, typically with a random crop.
        is_train: training or test mapping.
        image_format: only ``"RGB"`` (the model contract).
    """

    def __init__(
        self,
        augmentation: Sequence[v2.Transform] | v2.Transform | None,
        augmentation_with_crop: Sequence[v2.Transform] | v2.Transform | None = None,
        is_train: bool = True,
        image_format: str = "RGB",
    ) -> None:
        if image_format != "RGB":
            raise ValueError(f"DetrDatasetMapper only supports image_format='RGB', got {image_format!r}")
        self.is_train = is_train
        self.image_format = image_format
        plain = build_augmentation(augmentation)
        if is_train and augmentation_with_crop is not None:
            self.augmentation = RandomChoice([plain, build_augmentation(augmentation_with_crop)], p=[0.5, 0.5])
        else:
            self.augmentation = plain

    def __repr__(self) -> str:
        return f"{type(self).__name__}(is_train={self.is_train}, augmentation={self.augmentation})"

    def inference_input(self, image: torch.Tensor) -> dict:
        """The model input of an image that comes without a dataset dict (``engine.predictor``, the scripts).

        Args:
            image: uint8 ``[3, H, W]``, RGB.

        Returns:
            ``{"image": uint8 [3, H', W'] after the augmentation (the test resize), "height": H, "width": W}``.
        """
        resized = self.augmentation({"image": tv_tensors.Image(image)})["image"].as_subclass(torch.Tensor)
        return {"image": resized, "height": int(image.shape[-2]), "width": int(image.shape[-1])}

    def __call__(self, dataset_dict: dict) -> dict:
        """Maps one dataset dict.

        Returns:
            dict with ``image`` (uint8 [3, H', W']), ``height``, ``width`` (original size), ``image_id``,
            ``file_name``, and in training ``boxes`` (float32 [N, 4]) and ``labels`` (int64 [N]).
        """
        file_name = dataset_dict["file_name"]
        image = read_image(file_name)
        _check_image_size(dataset_dict, image)
        sample = {"image": tv_tensors.Image(image)}
        if self.is_train:
            sample.update(annotations_to_targets(dataset_dict.get("annotations", []), tuple(image.shape[-2:])))
        sample = self.augmentation(sample)
        out = {
            "image": sample["image"].as_subclass(torch.Tensor),
            "height": int(image.shape[-2]),
            "width": int(image.shape[-1]),
            "image_id": dataset_dict.get("image_id"),
            "file_name": file_name,
        }
        if self.is_train:
            out.update(_clip_and_filter(sample["boxes"], sample["labels"], tuple(out["image"].shape[-2:])))
        return out


def _clip_and_filter(boxes: torch.Tensor, labels: torch.Tensor, image_size: tuple[int, int]) -> dict:
    """Clips XYXY boxes [N, 4] to the image and drops empty ones (like detectron2's filter_empty_instances)."""
    h, w = image_size
    boxes = boxes.as_subclass(torch.Tensor).to(torch.float32).clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return {"boxes": boxes[keep], "labels": labels[keep]}
