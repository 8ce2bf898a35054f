"""The synthetic dataset: deterministic bytes, valid COCO, tight boxes, size spread, safe concurrent generation."""

import contextlib
import io
import json
import multiprocessing
import os
import uuid

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from data.catalog import DatasetCatalog, MetadataCatalog
from data.synthetic import (
    _draw_object,
    dataset_summary,
    ensure_synthetic_dataset,
    generate_synthetic_coco,
    register_synthetic,
    render_image,
)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def tree_bytes(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return str(root), generate_synthetic_coco(str(root), num_train=16, num_val=4, seed=0)


def test_same_seed_same_bytes(generated, tmp_path):
    root, _ = generated
    generate_synthetic_coco(str(tmp_path / "again"), num_train=16, num_val=4, seed=0)
    assert tree_bytes(root) == tree_bytes(tmp_path / "again")
    generate_synthetic_coco(str(tmp_path / "other"), num_train=2, num_val=0, seed=1)
    assert tree_bytes(tmp_path / "other")["train/000000.png"] != tree_bytes(root)["train/000000.png"]


def test_valid_coco_with_non_contiguous_ids(generated):
    root, json_files = generated
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(json_files["train"])
    assert sorted(coco.getCatIds()) == [1, 3, 5, 7]
    assert len(coco.getImgIds()) == 16 and len(COCO(json_files["val"]).getImgIds()) == 4
    content = read_json(json_files["train"])
    assert "info" in content
    for ann in content["annotations"]:
        assert ann["iscrowd"] == 0 and ann["area"] == ann["bbox"][2] * ann["bbox"][3]
    for img in content["images"]:
        with Image.open(os.path.join(root, "train", img["file_name"])) as im:
            assert im.size == (img["width"], img["height"])
            assert 256 <= im.width <= 384 and 256 <= im.height <= 384
    for ann in content["annotations"]:
        img = coco.imgs[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and w >= 1 and h >= 1 and x + w <= img["width"] and y + h <= img["height"]
    orientations = {img["width"] >= img["height"] for img in content["images"]}
    assert orientations == {True, False}


def test_size_spread_and_object_counts(generated):
    _, json_files = generated
    summary = dataset_summary(json_files["train"])
    assert all(summary["sizes"][k] >= 1 for k in ("small", "medium", "large")), summary
    assert all(n >= 1 for n in summary["instances"].values()), summary
    content = read_json(json_files["train"])
    per_image = [sum(a["image_id"] == img["id"] for a in content["annotations"]) for img in content["images"]]
    assert max(per_image) <= 8


def test_some_images_have_no_objects():
    empty = sum(not render_image(np.random.default_rng([0, 0, i]))[1] for i in range(60))
    assert 1 <= empty <= 15


@pytest.mark.parametrize("label", [0, 1, 2, 3])
def test_boxes_tightly_bound_the_drawn_object(label):
    for i in range(10):
        canvas = np.zeros((300, 340), dtype=np.float32)
        obj = _draw_object(np.random.default_rng([label, i]), canvas, label, [])
        rows, cols = np.nonzero(canvas)
        x, y, w, h = obj["bbox"]
        assert obj["label"] == label
        assert [x, y, x + w, y + h] == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        assert np.abs(canvas).max() >= 10 * 0.25  # visible: at least a few grey levels somewhere


def _race(root, barrier, results):
    barrier.wait()
    results.put(ensure_synthetic_dataset(root, num_train=6, num_val=2, seed=0))


def test_concurrent_first_use_generation(tmp_path):
    root = str(tmp_path / "datasets" / "synthetic")
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(root, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert {results.get(timeout=5), results.get(timeout=5)} == {root}
    assert os.listdir(tmp_path / "datasets") == ["synthetic"]  # no temporary folder left behind
    reference = tmp_path / "reference"
    generate_synthetic_coco(str(reference), num_train=6, num_val=2, seed=0)
    assert tree_bytes(root) == tree_bytes(reference)


def test_losing_the_race_uses_the_winners_copy(tmp_path, monkeypatch):
    import data.synthetic as synthetic

    root = str(tmp_path / "synthetic")
    real_generate = synthetic.generate_synthetic_coco

    def generate_while_another_process_wins(out, **kwargs):
        real_generate(root, num_train=1, num_val=1, seed=5)  # the winner finishes first...
        return real_generate(out, **kwargs)  # ...while we still write our temporary copy

    monkeypatch.setattr(synthetic, "generate_synthetic_coco", generate_while_another_process_wins)
    assert ensure_synthetic_dataset(root, num_train=2, num_val=1, seed=0) == root
    assert len(read_json(os.path.join(root, "annotations", "instances_train.json"))["images"]) == 1
    assert os.listdir(tmp_path) == ["synthetic"]


def test_incomplete_root_is_an_error(tmp_path):
    (tmp_path / "synthetic").mkdir()
    (tmp_path / "synthetic" / "junk.txt").write_text("x")
    with pytest.raises(FileExistsError, match="synthetic"):
        ensure_synthetic_dataset(str(tmp_path / "synthetic"), num_train=1, num_val=1)


def test_register_synthetic_metadata_before_use_and_lazy_generation(tmp_path):
    prefix = f"synth_{uuid.uuid4().hex[:6]}"
    root = tmp_path / "lazy"
    names = register_synthetic(str(root), name_prefix=prefix, num_train=3, num_val=2, seed=0)
    assert names == [f"{prefix}_train", f"{prefix}_val"]
    meta = MetadataCatalog.get(f"{prefix}_val")
    assert meta.thing_classes == ["spot", "scratch", "ring", "plate"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 3: 1, 5: 2, 7: 3}
    assert meta.json_file == str(root / "annotations" / "instances_val.json") and meta.evaluator_type == "coco"
    assert not root.exists()  # nothing generated yet
    dicts = DatasetCatalog.get(f"{prefix}_val")
    assert len(dicts) == 2 and root.exists() and len(DatasetCatalog.get(f"{prefix}_train")) == 3
    labels = {a["category_id"] for d in dicts for a in d["annotations"]}
    assert labels <= {0, 1, 2, 3}


def test_script_writes_dataset_and_prints_summary(tmp_path, capsys):
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "make_synthetic_dataset.py")
    spec = importlib.util.spec_from_file_location("make_synthetic_dataset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--output", str(tmp_path / "out"), "--num-train", "3", "--num-val", "1", "--seed", "2"])
    text = capsys.readouterr().out
    assert "[train] 3 images" in text and "[val] 1 images" in text and "small" in text and "spot" in text
    assert (tmp_path / "out" / "annotations" / "instances_train.json").is_file()
