"""YOLO datasets: class files, YOLO <-> COCO conversion, registration with a cached json, evaluation, the script."""

import importlib.util
import json
import logging
import os
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from data import yolo as yolo_module
from data.yolo import (
    coco_dict_to_yolo,
    default_label_dir,
    read_yolo_classes,
    register_yolo_instances,
    yolo_coco_json,
    yolo_to_coco_dict,
)
from evaluation import COCOEvaluator

CLASSES = ["zebra", "apple", "mango"]  # deliberately not alphabetical: the user's order must be kept
EXIF_ORIENTATION = 0x0112

# relative image path -> (stored width, stored height, EXIF orientation or None)
IMAGES = {
    "a.jpg": (64, 48, None),
    "b.png": (50, 80, None),
    "d.jpg": (60, 30, 6),  # rotated 90 degrees on display: 30 wide, 60 tall
    "e.png": (32, 32, None),  # no label file: an image without objects
    "sub/c.png": (40, 40, None),
}
LABELS = {
    "a.txt": "0 0.5 0.5 0.25 0.5\n1 0.25 0.25 0.125 0.25\n2 0.75 0.75 0.2 0.3\n",
    "b.txt": "2 0.5 0.5 0.4 0.5\n\n1 0.1 0.1 0.5 0.1 0.3 0.4\n",  # a blank line and a polygon
    "d.txt": "1 0.5 0.25 0.5 0.25\n0 0.5 0.75 1 0.5\n",
    "sub/c.txt": "",  # empty label file: no objects either
}


def unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def write_image(path, width, height, orientation=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(width * height).integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if path.suffix == ".jpg":
        exif = Image.Exif()
        if orientation is not None:
            exif[EXIF_ORIENTATION] = orientation
        image.save(path, format="JPEG", exif=exif)
    else:
        image.save(path, format="PNG")


@pytest.fixture
def dataset(tmp_path):
    """``ds/images/train``, ``ds/labels/train``, ``ds/data.yaml`` (dict names) and ``ds/classes.txt``."""
    root = tmp_path / "ds"
    for name, (width, height, orientation) in IMAGES.items():
        write_image(root / "images" / "train" / name, width, height, orientation)
    for name, text in LABELS.items():
        if text is not None:
            (root / "labels" / "train" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "labels" / "train" / name).write_text(text)
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nnames:\n  2: mango\n  0: zebra\n  1: apple\n")
    (root / "classes.txt").write_text("zebra\napple\nmango\n\n")
    return root


def image_dir(root):
    return root / "images" / "train"


def label_dir(root):
    return root / "labels" / "train"


def normalised(bbox, image):
    x, y, w, h = bbox
    return np.array([x / image["width"], y / image["height"], w / image["width"], h / image["height"]])


# ------------------------------------------------------------------------------------------------ class files


@pytest.mark.parametrize(
    "file_name, text",
    [
        ("data.yaml", "names: [zebra, apple, mango]\n"),
        ("data.yml", "nc: 3\nnames:\n  1: apple\n  0: zebra\n  2: mango\n"),
        ("classes.txt", "zebra\n  apple \n\nmango\n"),
        ("obj.names", "\ufeffzebra\r\napple\r\nmango\r\n"),
    ],
)
def test_read_yolo_classes(tmp_path, file_name, text):
    (tmp_path / file_name).write_text(text, encoding="utf-8")
    assert read_yolo_classes(tmp_path / file_name) == CLASSES


@pytest.mark.parametrize(
    "file_name, text, match",
    [
        ("data.yaml", "names:\n  0: a\n  2: b\n", r"data\.yaml: 'names' indices must be 0\.\.1, got \[0, 2\]"),
        ("data.yaml", "names:\n  '0': a\n", r"data\.yaml: 'names' indices"),
        ("data.yaml", "names: []\n", r"data\.yaml lists no class names"),
        ("data.yaml", "train: images\n", r"data\.yaml has no 'names' key"),
        ("data.yaml", "names: [a, b, a]\n", r"data\.yaml: duplicate class names \['a'\]"),
        ("data.yaml", "names: a\n", r"data\.yaml: 'names' must be a list"),
        ("data.yaml", "names: [a, b\n", r"data\.yaml is not valid YAML"),
        ("classes.txt", "\n\n", r"classes\.txt lists no class names"),
        ("classes.txt", "a\nb\na\n", r"classes\.txt: duplicate class names \['a'\]"),
    ],
)
def test_read_yolo_classes_errors(tmp_path, file_name, text, match):
    (tmp_path / file_name).write_text(text)
    with pytest.raises(ValueError, match=match):
        read_yolo_classes(tmp_path / file_name)


def test_read_yolo_classes_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        read_yolo_classes(tmp_path / "nope.yaml")


def test_default_label_dir(tmp_path):
    assert default_label_dir("/x/images/ds/images/train") == "/x/images/ds/labels/train"
    with pytest.raises(ValueError, match="no 'images' folder.*pass label_dir"):
        default_label_dir(tmp_path / "pictures")


# ------------------------------------------------------------------------------------------------ YOLO -> COCO


def test_yolo_to_coco_dict(dataset):
    coco = yolo_to_coco_dict(image_dir(dataset), class_names=dataset / "data.yaml")
    assert coco["categories"] == [{"id": k, "name": n} for k, n in enumerate(CLASSES)]
    images = {img["file_name"]: img for img in coco["images"]}
    assert [img["file_name"] for img in coco["images"]] == sorted(IMAGES)
    assert [img["id"] for img in coco["images"]] == [1, 2, 3, 4, 5]
    for name, (width, height, orientation) in IMAGES.items():
        expected = (width, height) if orientation is None else (height, width)  # EXIF 6 swaps them
        assert (images[name]["width"], images[name]["height"]) == expected
    per_image = {}
    for ann in coco["annotations"]:
        per_image.setdefault(ann["image_id"], []).append(ann)
        assert ann["iscrowd"] == 0 and ann["area"] == pytest.approx(ann["bbox"][2] * ann["bbox"][3])
    assert [a["id"] for a in coco["annotations"]] == list(range(1, 8))
    a = per_image[images["a.jpg"]["id"]]
    assert [x["category_id"] for x in a] == [0, 1, 2]
    assert a[0]["bbox"] == pytest.approx([24, 12, 16, 24])
    b = per_image[images["b.png"]["id"]]
    assert b[1]["category_id"] == 1 and b[1]["bbox"] == pytest.approx([5, 8, 20, 24])  # polygon -> its box
    d = per_image[images["d.jpg"]["id"]]  # displayed 30 wide, 60 tall
    assert d[1]["bbox"] == pytest.approx([0, 30, 30, 30])
    assert images["e.png"]["id"] not in per_image and images["sub/c.png"]["id"] not in per_image


def test_explicit_label_dir_and_class_list(dataset, tmp_path):
    elsewhere = tmp_path / "my_labels"
    label_dir(dataset).rename(elsewhere)
    coco = yolo_to_coco_dict(image_dir(dataset), elsewhere, class_names=CLASSES, num_workers=2)
    assert len(coco["annotations"]) == 7
    with pytest.raises(FileNotFoundError, match=r"label folder not found: .*labels/train"):
        yolo_to_coco_dict(image_dir(dataset), class_names=CLASSES)


def test_labelimg_classes_file_in_the_label_folder_is_not_a_label(dataset):
    (label_dir(dataset) / "classes.txt").write_text("zebra\napple\nmango\n")
    coco = yolo_to_coco_dict(image_dir(dataset), class_names=label_dir(dataset) / "classes.txt")
    assert len(coco["images"]) == len(IMAGES)


def test_boxes_sticking_out_are_clipped(dataset, caplog):
    (label_dir(dataset) / "e.txt").write_text("0 0.9 0.5 0.4 0.5\n0 0.5 0.5 1.0005 1\n")
    with caplog.at_level(logging.WARNING, logger="data.yolo"):
        coco = yolo_to_coco_dict(image_dir(dataset), class_names=CLASSES)
    image_id = next(img["id"] for img in coco["images"] if img["file_name"] == "e.png")
    boxes = [a["bbox"] for a in coco["annotations"] if a["image_id"] == image_id]
    assert boxes == [pytest.approx([22.4, 8, 9.6, 16]), pytest.approx([0, 0, 32, 32])]
    assert "Clipped 1 box(es)" in caplog.text and "e.txt" in caplog.text


# ------------------------------------------------------------------------------------------------ bad input


def test_every_malformed_line_is_reported_at_once(dataset):
    bad = label_dir(dataset) / "a.txt"
    bad.write_text(
        "0 0.5 0.5 0.25\n"  # 1: too few fields
        "1 0.5 x 0.2 0.2\n"  # 2: non-numeric
        "3 0.5 0.5 0.2 0.2\n"  # 3: class outside 0..2
        "-1 0.5 0.5 0.2 0.2\n"  # 4: negative class
        "0.5 0.5 0.5 0.2 0.2\n"  # 5: non-integer class
        "0 1.5 0.5 0.2 0.2\n"  # 6: outside [0, 1]
        "0 0.5 0.5 0 0.2\n"  # 7: zero width
        "0 0.5 0.5 0.2 -0.1\n"  # 8: negative height
        "0 0.1 0.1 0.5 0.1 0.3\n"  # 9: 6 fields
        "0 0.1 0.1 0.5 0.1 0.9 0.1\n"  # 10: flat polygon
        "0 0.5 0.5 0.2 nan\n"  # 11: not finite
        "0 0.5 0.5 0.2 0.2\n"  # 12: fine
    )
    (label_dir(dataset) / "d.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ValueError) as info:
        yolo_to_coco_dict(image_dir(dataset), class_names=CLASSES)
    message = str(info.value)
    assert message.startswith("12 problem(s) in the YOLO dataset")
    expected = {
        1: "4 fields; expected 5",
        2: "non-numeric value 'x'",
        3: "class 3 is not an index in 0..2",
        4: "class -1 is not an index in 0..2",
        5: "class 0.5 is not an index in 0..2",
        6: "coordinates [1.5] outside [0, 1]",
        7: "non-positive width/height 0.0, 0.2",
        8: "non-positive width/height 0.2, -0.1",
        9: "6 fields; expected 5",
        10: "polygon with zero width or height",
        11: "non-finite value 'nan'",
    }
    for line, problem in expected.items():
        assert f"{bad}:{line}: {problem}" in message
    assert f"{bad}:12:" not in message
    assert f"{label_dir(dataset) / 'd.txt'}:1: class 7 is not an index in 0..2" in message


def test_binary_label_file_is_named(dataset):
    (label_dir(dataset) / "a.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match=r"a\.txt: not a UTF-8 text file"):
        yolo_to_coco_dict(image_dir(dataset), class_names=CLASSES)


def test_label_files_without_images_are_listed(dataset):
    (label_dir(dataset) / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (label_dir(dataset) / "sub" / "phantom.txt").write_text("")
    with pytest.raises(ValueError, match=r"2 label file\(s\) in .* have no image") as info:
        yolo_to_coco_dict(image_dir(dataset), class_names=CLASSES)
    assert str(label_dir(dataset) / "ghost.txt") in str(info.value)
    assert str(label_dir(dataset) / "sub" / "phantom.txt") in str(info.value)


def test_images_sharing_a_label_file(dataset):
    write_image(image_dir(dataset) / "a.png", 10, 10)
    with pytest.raises(ValueError, match=r"share a label file.*a\.jpg, a\.png -> a\.txt"):
        yolo_to_coco_dict(image_dir(dataset), class_names=CLASSES)


def test_unreadable_image_is_named(dataset):
    (image_dir(dataset) / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"(?s)1 problem\(s\).*Cannot read the image header of .*broken\.png"):
        yolo_to_coco_dict(image_dir(dataset), class_names=CLASSES)


def test_missing_or_empty_image_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image folder not found: .*images/none"):
        yolo_to_coco_dict(tmp_path / "images" / "none", class_names=CLASSES)
    (tmp_path / "images" / "empty").mkdir(parents=True)
    (tmp_path / "labels" / "empty").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"No images .* found in .*images/empty"):
        yolo_to_coco_dict(tmp_path / "images" / "empty", class_names=CLASSES)


# ------------------------------------------------------------------------------------------------ round trips


def test_yolo_to_coco_to_yolo_keeps_every_line(dataset, tmp_path):
    (label_dir(dataset) / "b.txt").write_text("2 0.5 0.5 0.4 0.5\n1 0.3 0.25 0.4 0.3\n")  # boxes only
    coco = yolo_to_coco_dict(image_dir(dataset), class_names=dataset / "classes.txt")
    out = tmp_path / "back"
    assert coco_dict_to_yolo(coco, out) == CLASSES
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.txt"))
    assert written == ["a.txt", "b.txt", "d.txt", "e.txt", "sub/c.txt"]  # e.txt: an empty file for e.png
    assert (out / "e.txt").read_text() == "" and (out / "sub" / "c.txt").read_text() == ""
    for name in ("a.txt", "b.txt", "d.txt"):
        original = [line.split() for line in (label_dir(dataset) / name).read_text().splitlines()]
        back = [line.split() for line in (out / name).read_text().splitlines()]
        assert [f[0] for f in back] == [f[0] for f in original]
        np.testing.assert_allclose(
            [[float(v) for v in f[1:]] for f in back], [[float(v) for v in f[1:]] for f in original], atol=1e-9
        )


def random_coco(rng, images, category_ids):
    annotations = []
    for img in images:
        for _ in range(int(rng.integers(0, 6))):
            x0, y0 = rng.uniform(0, img["width"] - 2), rng.uniform(0, img["height"] - 2)
            w, h = rng.uniform(1, img["width"] - x0), rng.uniform(1, img["height"] - y0)
            cat = int(rng.choice(category_ids))
            ann = {"id": len(annotations) + 1, "image_id": img["id"], "category_id": cat, "bbox": [x0, y0, w, h]}
            annotations.append({**ann, "area": w * h, "iscrowd": 0})
    return annotations


def test_coco_to_yolo_to_coco_keeps_every_box_and_class(tmp_path, caplog):
    rng = np.random.default_rng(0)
    root = tmp_path / "ds"
    sizes = [(37, 91), (640, 480), (123, 321), (1000, 17)]
    images = []
    for i, (w, h) in enumerate(sizes):
        write_image(root / "images" / "val" / f"img{i}.png", w, h)
        images.append({"id": 10 + i, "file_name": f"img{i}.png", "width": w, "height": h})
    categories = [{"id": 7, "name": "seven"}, {"id": 2, "name": "two"}, {"id": 40, "name": "forty"}]
    annotations = random_coco(rng, images, [2, 7, 40])
    crowd = {**annotations[0], "id": 999, "iscrowd": 1}
    coco = {"images": images, "annotations": [*annotations, crowd], "categories": categories}
    with caplog.at_level(logging.INFO, logger="data.yolo"):
        names = coco_dict_to_yolo(coco, root / "labels" / "val")
    assert names == ["two", "seven", "forty"]  # sorted category ids
    assert "Skipped 1 crowd annotation(s)" in caplog.text
    back = yolo_to_coco_dict(root / "images" / "val", class_names=names)
    assert [c["name"] for c in back["categories"]] == names
    by_file = {img["file_name"]: img for img in back["images"]}
    for img in images:
        assert (by_file[img["file_name"]]["width"], by_file[img["file_name"]]["height"]) == (
            img["width"],
            img["height"],
        )
    original_name = {c["id"]: c["name"] for c in categories}
    expected = sorted(
        (img["file_name"], original_name[a["category_id"]], *normalised(a["bbox"], img))
        for img in images
        for a in annotations
        if a["image_id"] == img["id"]
    )
    back_images = {img["id"]: img for img in back["images"]}
    got = sorted(
        (
            back_images[a["image_id"]]["file_name"],
            names[a["category_id"]],
            *normalised(a["bbox"], back_images[a["image_id"]]),
        )
        for a in back["annotations"]
    )
    assert len(got) == len(expected) == len(annotations)
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    np.testing.assert_allclose([g[2:] for g in got], [e[2:] for e in expected], rtol=1e-6, atol=1e-12)


def test_coco_to_yolo_errors(tmp_path):
    coco = {
        "images": [
            {"id": 1, "file_name": "a/x.png", "width": 10, "height": 10},
            {"id": 2, "file_name": "a/x.jpg", "width": 10, "height": 10},
        ],
        "annotations": [],
        "categories": [{"id": 1, "name": "one"}],
    }
    with pytest.raises(ValueError, match=r"share the label file.*x\.txt"):
        coco_dict_to_yolo(coco, tmp_path / "labels")
    coco["images"].pop()
    coco["annotations"] = [{"id": 5, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1]}]
    with pytest.raises(ValueError, match=r"Annotation id 5 .*category_id 3"):
        coco_dict_to_yolo(coco, tmp_path / "labels")


# ------------------------------------------------------------------------------------------------ registration


def test_registration_reads_nothing(tmp_path):
    name = unique("yolo_lazy")
    register_yolo_instances(name, {}, tmp_path / "images" / "none", tmp_path / "missing.yaml")
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "coco" and meta.image_root == str(tmp_path / "images" / "none")
    assert meta.yolo_label_dir == str(tmp_path / "labels" / "none")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        DatasetCatalog.get(name)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        meta.get("thing_classes")


def test_registered_dataset_loads_with_contiguous_labels(dataset):
    name = unique("yolo_train")
    register_yolo_instances(name, {}, image_dir(dataset), dataset / "data.yaml")
    assert not list(dataset.rglob("*.json"))  # nothing converted yet
    assert MetadataCatalog.get(name).thing_classes == CLASSES  # from the class file, still no conversion
    assert not list(dataset.rglob("*.json"))
    dicts = get_detection_dataset_dicts(name)  # drops the two empty images
    assert sorted(os.path.relpath(d["file_name"], image_dir(dataset)) for d in dicts) == ["a.jpg", "b.png", "d.jpg"]
    labels = sorted({a["category_id"] for d in dicts for a in d["annotations"]})
    assert labels == [0, 1, 2]
    meta = MetadataCatalog.get(name)
    assert meta.thing_dataset_id_to_contiguous_id == {0: 0, 1: 1, 2: 2}
    assert os.path.dirname(meta.json_file) == str(dataset / "labels")  # cached next to the label folder
    d = next(d for d in dicts if d["file_name"].endswith("d.jpg"))
    assert (d["height"], d["width"]) == (60, 30)


def test_cache_is_reused_and_refreshed(dataset, tmp_path, monkeypatch):
    calls = []
    convert = yolo_module._convert
    monkeypatch.setattr(yolo_module, "_convert", lambda *a, **k: calls.append(1) or convert(*a, **k))
    cache = tmp_path / "cache"
    path = yolo_coco_json(image_dir(dataset), dataset / "classes.txt", cache_dir=cache)
    assert yolo_coco_json(image_dir(dataset), dataset / "classes.txt", cache_dir=cache) == path
    assert len(calls) == 1 and os.listdir(cache) == [os.path.basename(path)]
    (label_dir(dataset) / "e.txt").write_text("2 0.5 0.5 0.5 0.5\n")  # a new label file
    assert yolo_coco_json(image_dir(dataset), dataset / "classes.txt", cache_dir=cache) == path
    assert len(calls) == 2
    with open(path) as f:
        assert len(json.load(f)["annotations"]) == 8
    (dataset / "classes.txt").write_text("zebra\napple\npear\n")  # renamed class
    yolo_coco_json(image_dir(dataset), dataset / "classes.txt", cache_dir=cache)
    assert len(calls) == 3 and os.listdir(cache) == [os.path.basename(path)]
    with open(path) as f:
        assert [c["name"] for c in json.load(f)["categories"]] == ["zebra", "apple", "pear"]


def test_metadata_class_names_must_agree(dataset):
    name = unique("yolo_disagree")
    register_yolo_instances(name, {"thing_classes": ["a", "b", "c"]}, image_dir(dataset), dataset / "classes.txt")
    with pytest.raises(ValueError, match="thing_classes"):
        DatasetCatalog.get(name)


def test_perfect_predictions_give_ap_100(dataset, tmp_path):
    name = unique("yolo_val")
    register_yolo_instances(name, {}, image_dir(dataset), dataset / "data.yaml", cache_dir=tmp_path / "cache")
    evaluator = COCOEvaluator(name, distributed=False, output_dir=str(tmp_path / "eval"))  # before loading
    dicts = DatasetCatalog.get(name)
    evaluator.reset()
    for d in dicts:
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in d["annotations"])])
        labels = torch.tensor([a["category_id"] for a in d["annotations"]], dtype=torch.int64)
        output = {"boxes": boxes.reshape(-1, 4), "scores": torch.ones(len(labels)), "labels": labels}
        evaluator.process([{"image_id": d["image_id"]}], [output])
    results = evaluator.evaluate()["bbox"]
    assert results["AP"] == pytest.approx(100.0)
    for cls in CLASSES:
        assert results[f"AP-{cls}"] == pytest.approx(100.0)


# ------------------------------------------------------------------------------------------------ script


def load_script():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "convert_yolo.py")
    spec = importlib.util.spec_from_file_location("convert_yolo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_convert_yolo_script(dataset, tmp_path, capsys):
    script = load_script()
    out = tmp_path / "out" / "train.json"
    coco = script.main(
        ["--images", str(image_dir(dataset)), "--classes", str(dataset / "data.yaml"), "--output", str(out)]
    )
    with open(out) as f:
        assert json.load(f) == coco
    printed = capsys.readouterr().out
    assert "images: 5 (2 empty)" in printed and "boxes: 7" in printed
    assert "0 zebra: 2" in printed and "1 apple: 3" in printed and "2 mango: 2" in printed
    labels = tmp_path / "yolo_labels"
    script.main(["--to-yolo", "--json", str(out), "--output", str(labels)])
    assert (labels / "classes.txt").read_text() == "zebra\napple\nmango\n"
    assert (labels / "a.txt").read_text().splitlines()[0].split()[0] == "0"
    again = yolo_to_coco_dict(image_dir(dataset), labels, class_names=labels / "classes.txt")
    assert len(again["annotations"]) == 7
    with pytest.raises(SystemExit):
        script.main(["--to-yolo", "--output", str(labels)])  # no --json


def test_json_file_metadata_before_loading(dataset, tmp_path, monkeypatch):
    calls = []
    convert = yolo_module._convert
    monkeypatch.setattr(yolo_module, "_convert", lambda *a, **k: calls.append(1) or convert(*a, **k))
    name = unique("yolo_json_first")
    register_yolo_instances(name, {}, image_dir(dataset), CLASSES, cache_dir=tmp_path / "cache")
    json_file = MetadataCatalog.get(name).json_file  # what the evaluator reads: converts now
    assert json_file.startswith(str(tmp_path / "cache")) and os.path.isfile(json_file)
    assert len(DatasetCatalog.get(name)) == len(IMAGES)  # reuses the cache, same json_file
    assert len(calls) == 1 and MetadataCatalog.get(name).json_file == json_file
