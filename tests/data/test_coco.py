"""COCO json loading: contiguous ids, metadata, bad input, registration and conversion back."""

import json
import logging
import uuid

import pytest
from pycocotools.coco import COCO

from data.catalog import DatasetCatalog, MetadataCatalog
from data.coco import convert_to_coco_dict, convert_to_coco_json, load_coco_json, register_coco_instances


def unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def coco_dict():
    return {
        "images": [
            {"id": 2, "file_name": "b.png", "height": 40, "width": 60},
            {"id": 1, "file_name": "a.png", "height": 30, "width": 50},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 7, "bbox": [1, 2, 3, 4], "area": 12, "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [5, 5, 10, 10], "area": 100, "iscrowd": 1},
            {"id": 12, "image_id": 2, "category_id": 3, "bbox": [0.5, 1.5, 20, 30], "area": 600, "iscrowd": 0},
        ],
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}],
    }


@pytest.fixture
def write_json(tmp_path):
    (tmp_path / "images").mkdir()

    def write(content):
        path = tmp_path / "instances.json"
        path.write_text(json.dumps(content))
        return str(path), str(tmp_path / "images")

    return write


def test_contiguous_mapping_and_metadata(write_json):
    json_file, image_root = write_json(coco_dict())
    name = unique("coco_test")
    dicts = load_coco_json(json_file, image_root, name)
    assert [d["image_id"] for d in dicts] == [1, 2]
    first = dicts[0]
    assert first["file_name"].endswith("images/a.png") and (first["height"], first["width"]) == (30, 50)
    # sorted original ids 3, 7 -> 0, 1
    assert first["annotations"] == [
        {"bbox": [1.0, 2.0, 3.0, 4.0], "category_id": 1, "iscrowd": 0},
        {"bbox": [5.0, 5.0, 10.0, 10.0], "category_id": 0, "iscrowd": 1},  # crowd kept
    ]
    assert dicts[1]["annotations"][0]["bbox"] == [0.5, 1.5, 20.0, 30.0]
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["three", "seven"]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1}
    assert (meta.json_file, meta.image_root, meta.evaluator_type) == (json_file, image_root, "coco")


def broken(field, value, index=0):
    content = coco_dict()
    if value is None:
        del content["annotations"][index][field]
    else:
        content["annotations"][index][field] = value
    return content


@pytest.mark.parametrize(
    "content, match",
    [
        (broken("category_id", 4), r"instances\.json.*annotation id 10 .*category_id 4"),
        (broken("bbox", None), r"instances\.json.*annotation id 10 has no 'bbox'"),
        (broken("bbox", [1, 2, 3]), r"instances\.json.*annotation id 10 .*\[1, 2, 3\]"),
        (broken("bbox", [1, 2, "x", 4]), r"annotation id 10 .*'x'"),
        (broken("bbox", [1, 2, float("nan"), 4]), r"annotation id 10 .*nan"),
        (broken("image_id", 99), r"instances\.json.*annotation id 10 .*image_id 99"),
        (broken("id", 12), r"instances\.json.*duplicate annotation ids \[12\]"),
    ],
)
def test_bad_annotations_raise_with_file_and_id(write_json, content, match):
    json_file, image_root = write_json(content)
    with pytest.raises(ValueError, match=match):
        load_coco_json(json_file, image_root)


def test_degenerate_boxes_dropped_with_one_warning(write_json, caplog):
    content = coco_dict()
    content["annotations"][0]["bbox"] = [1, 2, 0, 4]
    content["annotations"][2]["bbox"] = [1, 2, 5, -1]
    json_file, image_root = write_json(content)
    with caplog.at_level(logging.WARNING, logger="data.coco"):
        dicts = load_coco_json(json_file, image_root)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Dropped 2 annotation(s)" in warnings[0].message and json_file in warnings[0].message
    assert "[10, 12]" in warnings[0].message
    assert [len(d["annotations"]) for d in dicts] == [1, 0]


def test_missing_files(tmp_path, write_json):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_coco_json(str(tmp_path / "nope.json"), str(tmp_path))
    json_file, _ = write_json(coco_dict())
    with pytest.raises(FileNotFoundError, match="no_images_here"):
        load_coco_json(json_file, str(tmp_path / "no_images_here"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_coco_json(str(tmp_path / "bad.json"), str(tmp_path))


def test_register_is_lazy_and_conflicting_metadata_raises(write_json):
    json_file, image_root = write_json(coco_dict())
    name = unique("coco_lazy")
    register_coco_instances(name, {"thing_classes": ["three", "seven"]}, json_file, image_root)
    assert MetadataCatalog.get(name).evaluator_type == "coco"
    assert len(DatasetCatalog.get(name)) == 2
    other = unique("coco_conflict")
    register_coco_instances(other, {"thing_classes": ["a", "b"]}, json_file, image_root)
    with pytest.raises(ValueError, match="instances.json.*thing_classes"):
        DatasetCatalog.get(other)


def test_convert_to_coco_json_roundtrip(tmp_path, write_json):
    json_file, image_root = write_json(coco_dict())
    name = unique("coco_convert")
    register_coco_instances(name, {}, json_file, image_root)
    converted = convert_to_coco_dict(name)
    assert converted["categories"] == [{"id": 3, "name": "three"}, {"id": 7, "name": "seven"}]
    anns = converted["annotations"]
    assert [a["category_id"] for a in anns] == [7, 3, 3]
    assert [a["iscrowd"] for a in anns] == [0, 1, 0] and anns[0]["area"] == 12.0
    out = tmp_path / "out" / "converted.json"
    convert_to_coco_json(name, str(out))
    coco = COCO(str(out))
    assert len(coco.getAnnIds()) == 3 and sorted(coco.getCatIds()) == [3, 7]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp")]


def test_convert_without_original_ids():
    name = unique("plain")
    DatasetCatalog.register(
        name,
        lambda: [
            {
                "file_name": "x.png",
                "height": 10,
                "width": 10,
                "image_id": 0,
                "annotations": [{"bbox": [1, 1, 2, 3], "category_id": 1, "iscrowd": 0}],
            }
        ],
    )
    MetadataCatalog.get(name).set(thing_classes=["a", "b"])
    converted = convert_to_coco_dict(name)
    assert converted["categories"] == [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}]
    assert converted["annotations"][0]["area"] == 6.0 and converted["annotations"][0]["category_id"] == 1
