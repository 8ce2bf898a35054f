"""scripts/demo.py end to end: a tiny Salience DETR (random weights) over a tiny synthetic dataset."""

import json
import os
import shutil

import pytest
import torch
from PIL import Image

from core.lazy import LazyConfig, instantiate
from data import DatasetCatalog, MetadataCatalog
from engine.checkpoint import DetectionCheckpointer
from scripts import demo
from tests.tools.script_helpers import SALIENCE_CONFIG, detections_by_image, max_overlap, tiny_model_opts
from tests.tools.train_net_helpers import register_tiny


@pytest.fixture(scope="module")
def tiny_salience(tmp_path_factory):
    """``(weights path, opts, val dataset name, val dataset dicts)`` of a randomly initialised tiny model."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("demo_data")
    _, val_name = register_tiny(str(root), "demo_tiny")
    opts = tiny_model_opts(val_name)
    cfg = LazyConfig.apply_overrides(LazyConfig.load(SALIENCE_CONFIG), opts)
    model = instantiate(cfg.model)
    out = tmp_path_factory.mktemp("demo_weights")
    DetectionCheckpointer(model, str(out), save_to_disk=True).save("model")
    return str(out / "model.pth"), opts, val_name, DatasetCatalog.get(val_name)


def _run(weights, opts, inputs, output, *extra):
    argv = ["--config-file", SALIENCE_CONFIG, "--weights", weights, "--input", *inputs, "--output", str(output)]
    return demo.main([*argv, "--device", "cpu", *extra, *opts])


def test_demo_writes_pngs_and_coco_results(tiny_salience, tmp_path):
    weights, opts, val_name, records = tiny_salience
    folder = os.path.dirname(records[0]["file_name"])
    # a file, and the same file again through a glob: deduplicated
    inputs = [records[0]["file_name"], os.path.join(folder, "*.png")]
    out = _run(weights, opts, inputs, tmp_path / "out", "--score-threshold", "0")
    num_images = len([f for f in os.listdir(folder) if f.endswith(".png")])
    assert len(out["pngs"]) == num_images
    sizes = {r["file_name"]: (r["width"], r["height"]) for r in records}
    for png in out["pngs"]:
        with Image.open(png) as image:
            image.load()
            assert image.width >= 100 and image.height >= 100
    with open(out["results"]) as f:
        results = json.load(f)
    # threshold 0: every detection the model keeps is written: its top 20 of each image, less the duplicates
    # that the config's suppression (model.nms_iou_threshold=0.7) drops
    per_image = detections_by_image(results, "file_name")
    assert len(per_image) == num_images and all(0 < len(v) <= 20 for v in per_image.values())
    assert all(max_overlap(detections) <= 0.7 + 1e-4 for detections in per_image.values())
    dataset_ids = set(MetadataCatalog.get(val_name).thing_dataset_id_to_contiguous_id)
    for r in results:
        assert {"file_name", "bbox", "score", "category_id"} <= set(r)
        assert r["category_id"] in dataset_ids
        x, y, w, h = r["bbox"]
        width, height = sizes[r["file_name"]]
        # boxes are in the original image's pixels (the model sees a 128-pixel resize): centres inside it
        assert w >= 0 and h >= 0
        assert -1e-3 <= x + w / 2 <= width + 1e-3 and -1e-3 <= y + h / 2 <= height + 1e-3
    assert max(r["bbox"][0] + r["bbox"][2] for r in results) > 0.5 * min(w for w, _ in sizes.values())


def test_demo_threshold_filters(tiny_salience, tmp_path):
    weights, opts, _, records = tiny_salience
    out = _run(weights, opts, [records[0]["file_name"]], tmp_path / "out", "--score-threshold", "1.01")
    with open(out["results"]) as f:
        assert json.load(f) == []
    assert len(out["pngs"]) == 1 and os.path.isfile(out["pngs"][0])


def test_demo_bad_inputs(tiny_salience, tmp_path):
    weights, opts, _, records = tiny_salience
    with pytest.raises(FileNotFoundError, match="input not found"):
        _run(weights, opts, [str(tmp_path / "missing.png")], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="matches no file"):
        _run(weights, opts, [str(tmp_path / "nothing" / "*.jpg")], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image file"):
        _run(weights, opts, [str(tmp_path / "empty")], tmp_path / "out")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="Cannot decode image"):
        _run(weights, opts, [str(bad)], tmp_path / "out", "--strict")
    other = tmp_path / "other.pth"
    torch.save({"model": {"head.weight": torch.zeros(3, 3)}}, other)
    with pytest.raises(ValueError, match="does not fit the model"):
        _run(str(other), opts, [records[0]["file_name"]], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        _run(str(tmp_path / "none.pth"), opts, [records[0]["file_name"]], tmp_path / "out")


def test_demo_skips_unreadable_images_and_reports_them(tiny_salience, tmp_path):
    """A folder with a bad file: the others are processed, results.json is written, the bad one is listed."""
    weights, opts, _, records = tiny_salience
    folder = tmp_path / "images"
    folder.mkdir()
    for record in records[:2]:
        shutil.copy(record["file_name"], folder)
    (folder / "0_broken.png").write_bytes(b"not an image")
    with open(records[2]["file_name"], "rb") as f:
        truncated = f.read()
    (folder / "1_truncated.png").write_bytes(truncated[: len(truncated) // 2])
    out = _run(weights, opts, [str(folder)], tmp_path / "out", "--score-threshold", "0")
    assert len(out["pngs"]) == 2
    assert [os.path.basename(s["file_name"]) for s in out["skipped"]] == ["0_broken.png", "1_truncated.png"]
    with open(tmp_path / "out" / "skipped.json") as f:
        assert [s["file_name"] for s in json.load(f)] == [s["file_name"] for s in out["skipped"]]
    with open(out["results"]) as f:
        assert len({r["file_name"] for r in json.load(f)}) == 2
