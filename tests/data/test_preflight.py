"""Pre-flight image check: every bad file of a dataset in one error, before training (data/preflight.py)."""

import io
import json
import logging
import os
import uuid

import numpy as np
import pytest
from PIL import Image

from data import get_detection_dataset_dicts, register_coco_instances
from data.preflight import BadImagesError, check_images
from engine.defaults import default_argument_parser
from engine.train_loop import SimpleTrainer
from tests.tools.train_net_helpers import CONFIG, tiny_opts
from tools import train_net

CATEGORIES = [{"id": 2, "name": "a"}, {"id": 7, "name": "b"}, {"id": 11, "name": "c"}]  # non-contiguous ids
_ORIENTATION = 0x0112


def image_bytes(fmt: str, height: int, width: int, seed: int = 0, **save_kwargs) -> bytes:
    """A noise image (so that half the file is half the pixel data) encoded as ``fmt``."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **save_kwargs)
    return buffer.getvalue()


def rotated_jpeg(height: int, width: int) -> bytes:
    """A JPEG stored as ``width x height`` with EXIF orientation 6: it reads as ``height x width``."""
    exif = Image.Exif()
    exif[_ORIENTATION] = 6
    return image_bytes("JPEG", width, height, exif=exif.tobytes())


def write_dataset(root, files: dict[str, tuple[bytes | None, int, int]]) -> str:
    """Writes ``{name: (bytes or None for a missing file, json height, json width)}`` and registers it.

    Every image but ``*_empty.*`` ones gets one box; returns the registered name.
    """
    images, annotations = [], []
    for image_id, (name, (data, height, width)) in enumerate(files.items(), start=1):
        if data is not None:
            (root / name).write_bytes(data)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        if "_empty." not in name:
            bbox = [1, 1, 5, 5]
            annotations.append({"id": image_id, "image_id": image_id, "category_id": 7, "bbox": bbox, "iscrowd": 0})
    json_file = root / "instances.json"
    json_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    name = f"preflight_{uuid.uuid4().hex[:8]}"
    register_coco_instances(name, {}, str(json_file), str(root))
    return name


def good_files() -> dict[str, tuple[bytes, int, int]]:
    return {
        "good.png": (image_bytes("PNG", 40, 60), 40, 60),
        "good.jpg": (image_bytes("JPEG", 50, 30), 50, 30),
        "rotated.jpg": (rotated_jpeg(60, 40), 60, 40),  # json holds the size after EXIF rotation: fine
    }


@pytest.fixture
def broken_dataset(tmp_path) -> str:
    png, jpeg = image_bytes("PNG", 48, 64, seed=1), image_bytes("JPEG", 48, 64, seed=2)
    files = good_files() | {
        "missing.png": (None, 40, 60),
        "truncated.png": (png[: len(png) // 2], 48, 64),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], 48, 64),
        "not_an_image.jpg": (b"these are not the pixels you are looking for\n", 48, 64),
        "wrong_size_empty.png": (image_bytes("PNG", 40, 60), 41, 60),  # no objects: checked before filter_empty
    }
    return write_dataset(tmp_path, files)


EXPECTED_KINDS = {
    "missing.png": "missing",
    "truncated.png": "truncated",
    "truncated.jpg": "truncated",
    "not_an_image.jpg": "cannot parse header",
    "wrong_size_empty.png": "size mismatch",
}


def test_every_bad_image_is_reported_in_one_error(broken_dataset):
    with pytest.raises(BadImagesError) as excinfo:
        get_detection_dataset_dicts(broken_dataset)
    error = excinfo.value
    assert isinstance(error, ValueError)
    assert {os.path.basename(p.file_name): p.kind for p in error.problems} == EXPECTED_KINDS
    message = str(error)
    assert message.startswith(f"5 of 8 images of dataset '{broken_dataset}' cannot be used for training:")
    for name in EXPECTED_KINDS:
        assert f"{name}: " in message
    assert "missing.png: file not found" in message
    assert "JPEG data ends without the end-of-image marker FF D9" in message
    assert "PNG data ends without its IEND chunk" in message
    assert "wrong_size_empty.png: json says 41 x 60, file is 40 x 60 (height x width" in message
    assert "dataloader.train.dataset.check_images=False" in message


def test_processes_find_the_same_problems_in_the_same_order(broken_dataset):
    """Big datasets are spread over forked processes; the report must not depend on it."""
    dicts = get_detection_dataset_dicts(broken_dataset, filter_empty=False, check_images=False)
    found = []
    for processes in (1, 2, 3):
        with pytest.raises(BadImagesError) as excinfo:
            check_images(dicts, num_processes=processes, num_workers=2)
        found.append([(p.file_name, p.kind, p.detail) for p in excinfo.value.problems])
    assert found[0] == found[1] == found[2] and len(found[0]) == 5


def test_good_dataset_passes_and_logs_one_line(tmp_path, caplog):
    name = write_dataset(tmp_path, good_files())
    with caplog.at_level(logging.INFO, logger="data.preflight"):
        assert len(get_detection_dataset_dicts(name)) == 3
    lines = [r.getMessage() for r in caplog.records if r.name == "data.preflight"]
    assert len(lines) == 1 and lines[0].startswith(f"Checked 3 images of dataset '{name}' in ")


def test_check_images_false_skips_the_check(broken_dataset):
    dicts = get_detection_dataset_dicts(broken_dataset, check_images=False)
    assert len(dicts) == 7  # the image without objects is filtered, the bad files are not looked at


def test_data_after_the_end_marker_is_fine(tmp_path):
    jpeg, png = image_bytes("JPEG", 30, 40), image_bytes("PNG", 30, 40)
    thumbnail = image_bytes("JPEG", 8, 8)  # an APP1 segment whose payload ends with FF D9
    app1 = b"\xff\xe1" + (len(thumbnail) + 8).to_bytes(2, "big") + b"Exif\0\0" + thumbnail
    files = {
        "video_appended.jpg": jpeg + b"\0\0\0\x18ftypmp42" + os.urandom(5000),  # motion photos append a video
        "padded.jpg": jpeg + b"\xff" * 64,
        "progressive.jpg": image_bytes("JPEG", 30, 40, progressive=True),
        "trailer.png": png + os.urandom(100),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "thumbnail_cut.jpg").write_bytes((jpeg[:2] + app1 + jpeg[2:])[: len(app1) + 200])
    dicts = [{"file_name": str(tmp_path / n), "height": 30, "width": 40} for n in files]
    check_images(dicts, num_workers=2)
    with pytest.raises(BadImagesError, match="thumbnail_cut.jpg: JPEG data ends without the end-of-image marker"):
        check_images([*dicts, {"file_name": str(tmp_path / "thumbnail_cut.jpg"), "height": 30, "width": 40}])


def test_long_lists_are_capped_in_the_message_and_complete_in_the_log(tmp_path, caplog):
    dicts = [{"file_name": str(tmp_path / f"gone_{i:03d}.png"), "height": 1, "width": 1} for i in range(60)]
    with caplog.at_level(logging.ERROR, logger="data.preflight"), pytest.raises(BadImagesError) as excinfo:
        check_images(dicts, dataset_name="many")
    message = str(excinfo.value)
    assert len(excinfo.value.problems) == 60
    assert "missing (60):" in message and "gone_049.png" in message and "gone_050.png" not in message
    assert "... and 10 more" in message and "the log lists all 60" in message
    assert "gone_059.png" in caplog.text


def test_train_net_fails_before_the_first_iteration(broken_dataset, tmp_path, monkeypatch):
    steps = []
    monkeypatch.setattr(SimpleTrainer, "run_step", lambda self: steps.append(self.iter))
    output_dir = str(tmp_path / "out")
    opts = tiny_opts(
        output_dir, (broken_dataset, broken_dataset), max_iter=2, **{"train.device": "cpu", "model.num_classes": 3}
    )
    args = default_argument_parser().parse_args(["--config-file", CONFIG, *opts])
    with pytest.raises(BadImagesError, match="dataloader.train.dataset") as excinfo:  # instantiate names the key
        train_net.main(args)
    assert "5 of 8 images" in str(excinfo.value)
    problems = excinfo.value.__cause__.problems  # the check's own error
    assert {os.path.basename(p.file_name) for p in problems} == set(EXPECTED_KINDS)
    assert steps == []
    assert not os.path.exists(os.path.join(output_dir, "metrics.json"))
