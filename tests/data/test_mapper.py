"""DetrDatasetMapper: model input contract, crowd handling, and image errors naming the file."""

import numpy as np
import pytest
import torch
from PIL import Image

from data.mapper import IMAGE_EXTENSIONS, DetrDatasetMapper, read_image, read_image_size
from data.transforms import Crop, RandomFlip, ResizeShortestEdge


def write_png(path, h, w, mode="RGB"):
    rng = np.random.default_rng(0)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode=mode).save(path)
    return str(path)


def record(file_name, h, w):
    return {
        "file_name": file_name,
        "height": h,
        "width": w,
        "image_id": 5,
        "annotations": [
            {"bbox": [10, 20, 30, 10], "category_id": 2, "iscrowd": 0},
            {"bbox": [0, 0, 40, 40], "category_id": 1, "iscrowd": 1},
            {"bbox": [50, 5, 10, 15], "category_id": 0},
        ],
    }


def test_train_output_contract_and_crowd_dropped(tmp_path):
    d = record(write_png(tmp_path / "a.png", 60, 80), 60, 80)
    out = DetrDatasetMapper([ResizeShortestEdge(120)], is_train=True)(d)
    assert set(out) == {"image", "height", "width", "image_id", "file_name", "boxes", "labels"}
    assert type(out["image"]) is torch.Tensor and out["image"].dtype == torch.uint8
    assert out["image"].shape == (3, 120, 160)
    assert (out["height"], out["width"], out["image_id"], out["file_name"]) == (60, 80, 5, d["file_name"])
    assert type(out["boxes"]) is torch.Tensor and out["boxes"].dtype == torch.float32
    torch.testing.assert_close(out["boxes"], torch.tensor([[20.0, 40, 80, 60], [100, 10, 120, 40]]))
    assert out["labels"].dtype == torch.int64 and out["labels"].tolist() == [2, 0]
    assert len(d["annotations"]) == 3  # the dataset dict is not modified


def test_grey_png_read_as_rgb_and_image_unchanged_without_augmentation(tmp_path):
    path = write_png(tmp_path / "g.png", 20, 30, mode="L")
    out = DetrDatasetMapper([], is_train=True)(record(path, 20, 30))
    grey = torch.from_numpy(np.array(Image.open(path)))
    assert out["image"].shape == (3, 20, 30)
    assert all(torch.equal(out["image"][c], grey) for c in range(3))


def test_crop_variant_is_used_about_half_the_time(tmp_path):
    d = record(write_png(tmp_path / "a.png", 60, 80), 60, 80)
    mapper = DetrDatasetMapper([RandomFlip(prob=0.0)], [Crop(0, 0, 30, 30)], is_train=True)
    torch.manual_seed(0)
    shapes = [tuple(mapper(d)["image"].shape) for _ in range(40)]
    assert 5 < shapes.count((3, 30, 30)) < 35 and set(shapes) == {(3, 30, 30), (3, 60, 80)}
    cropped = next(o for o in (mapper(d) for _ in range(40)) if o["image"].shape[-1] == 30)
    torch.testing.assert_close(cropped["boxes"], torch.tensor([[10.0, 20, 30, 30]]))  # the box at x=50 is gone
    assert cropped["labels"].tolist() == [2]


def test_boxes_clipped_to_image_and_empty_ones_dropped(tmp_path):
    d = record(write_png(tmp_path / "a.png", 60, 80), 60, 80)
    d["annotations"] = [
        {"bbox": [70, 50, 20, 20], "category_id": 1, "iscrowd": 0},  # sticks out -> clipped
        {"bbox": [90, 10, 5, 5], "category_id": 2, "iscrowd": 0},  # outside the image -> dropped
    ]
    out = DetrDatasetMapper([], is_train=True)(d)
    torch.testing.assert_close(out["boxes"], torch.tensor([[70.0, 50, 80, 60]]))
    assert out["labels"].tolist() == [1]


def test_test_mode_has_no_targets(tmp_path):
    d = record(write_png(tmp_path / "a.png", 60, 80), 60, 80)
    mapper = DetrDatasetMapper([ResizeShortestEdge(30)], [Crop(0, 0, 5, 5)], is_train=False)
    out = mapper(d)
    assert set(out) == {"image", "height", "width", "image_id", "file_name"}
    assert out["image"].shape == (3, 30, 40) and (out["height"], out["width"]) == (60, 80)


def test_exif_orientation_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.new("RGB", (40, 20), (200, 10, 10)).save(path, exif=exif)
    out = DetrDatasetMapper([], is_train=False)({"file_name": str(path), "height": 40, "width": 20, "image_id": 1})
    assert out["image"].shape == (3, 40, 20)


@pytest.mark.parametrize(
    "fmt, ext", [("BMP", "bmp"), ("TIFF", "tif"), ("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")]
)
def test_every_listed_format_reads_as_its_pixels(tmp_path, fmt, ext):
    """BMP and TIFF are not torchvision's: PIL reads them; lossless formats give back the exact pixels."""
    assert f".{ext}" in IMAGE_EXTENSIONS
    pixels = np.random.default_rng(1).integers(0, 256, size=(30, 50, 3), dtype=np.uint8)
    path = tmp_path / f"image.{ext}"
    Image.fromarray(pixels).save(path, format=fmt, **({"quality": 100} if fmt in ("JPEG", "WEBP") else {}))
    image = read_image(str(path))
    assert image.dtype == torch.uint8 and image.shape == (3, 30, 50) == (3, *read_image_size(str(path)))
    if fmt in ("BMP", "TIFF", "PNG"):
        assert torch.equal(image, torch.from_numpy(pixels).permute(2, 0, 1))


@pytest.mark.parametrize("fmt, ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("TIFF", "tif")])
def test_header_size_agrees_with_the_decoded_image_under_exif_rotation(tmp_path, fmt, ext):
    """The pre-flight size (header only) is the size read_image returns, whichever decoder applies the EXIF."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"rotated.{ext}"
    Image.new("RGB", (40, 20), (200, 10, 10)).save(path, format=fmt, exif=exif.tobytes())
    assert tuple(read_image(str(path)).shape[1:]) == read_image_size(str(path))


def test_a_broken_file_of_a_torchvision_format_is_not_read_by_pil(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(ValueError, match="broken.png"):
        read_image(str(path))


def test_missing_file(tmp_path):
    path = str(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        DetrDatasetMapper([])(record(path, 10, 10))


@pytest.mark.parametrize("content", [b"this is not a png at all", b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "corrupt.png"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="corrupt.png"):
        DetrDatasetMapper([])(record(str(path), 10, 10))


def test_size_mismatch(tmp_path):
    path = write_png(tmp_path / "a.png", 60, 80)
    with pytest.raises(ValueError, match=r"a\.png.*h=60, w=80.*h=80, w=60"):
        DetrDatasetMapper([])(record(path, 80, 60))


def test_only_rgb(tmp_path):
    with pytest.raises(ValueError, match="BGR"):
        DetrDatasetMapper([], image_format="BGR")
