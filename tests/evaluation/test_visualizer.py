"""Detection pictures: results json parsing (with its errors) and the visualize_detections script end to end."""

import json

import numpy as np
import pytest
from PIL import Image

from evaluation.visualizer import load_coco_results, save_detection_grid

ID_MAP = {1: 0, 3: 1}


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def test_load_coco_results_converts_boxes_and_ids_and_sorts(tmp_path):
    path = _write(
        tmp_path / "r.json",
        [
            {"image_id": 7, "category_id": 3, "bbox": [10, 20, 5, 6], "score": 0.2},
            {"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.9},
            {"image_id": 8, "category_id": 1, "bbox": [1.5, 2, 3, 4], "score": 0.5},
        ],
    )
    results = load_coco_results(path, ID_MAP)
    assert [d["score"] for d in results[7]] == [0.9, 0.2]
    assert results[7][1] == {"box": [10, 20, 15, 26], "label": 1, "score": 0.2}
    assert results[8][0]["box"] == [1.5, 2, 4.5, 6]


@pytest.mark.parametrize(
    "entries,message",
    [
        ({"image_id": 1}, "list of detections"),
        ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}], "lacks \\['score'\\]"),
        ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 1}], "malformed bbox"),
        ([{"image_id": 1, "category_id": 2, "bbox": [0, 0, 1, 1], "score": 1}], "category_id 2"),
    ],
)
def test_load_coco_results_names_what_is_wrong(tmp_path, entries, message):
    with pytest.raises(ValueError, match=message):
        load_coco_results(_write(tmp_path / "bad.json", entries), ID_MAP)
    with pytest.raises(FileNotFoundError):
        load_coco_results(str(tmp_path / "missing.json"), ID_MAP)


def test_detection_grid_is_a_png_of_the_expected_size(tmp_path):
    images = [np.full((60, 80, 3), 128, np.uint8), np.zeros((50, 70, 3), np.uint8)]
    detections = [[{"box": [5, 5, 30, 40], "label": 1, "score": 0.75}], []]
    ground_truths = [[{"box": [6, 6, 31, 39], "label": 1}], [{"box": [0, 0, 10, 10], "label": 0}]]
    path = save_detection_grid(images, detections, ["a", "b"], str(tmp_path / "sub" / "g.png"), ground_truths, dpi=100)
    with Image.open(path) as picture:
        picture.load()
        width, height = picture.size
    assert picture.format == "PNG" and width == 160 and height >= 60  # two 0.8-inch panels side by side


def test_visualize_detections_script_on_synthetic_results(tmp_path):
    from data import DatasetCatalog, MetadataCatalog
    from scripts import visualize_detections
    from tests.tools.train_net_helpers import register_tiny

    _, val_name = register_tiny(str(tmp_path / "data"), "visualize_smoke")
    records = DatasetCatalog.get(val_name)
    contiguous_to_id = {v: k for k, v in MetadataCatalog.get(val_name).thing_dataset_id_to_contiguous_id.items()}
    results = [  # the ground truth itself as detections, score 0.9
        {"image_id": r["image_id"], "category_id": contiguous_to_id[a["category_id"]], "bbox": a["bbox"], "score": 0.9}
        for r in records
        for a in r["annotations"]
    ]
    results_path = _write(tmp_path / "results.json", results)
    out = tmp_path / "det.png"
    args = ["--results", results_path, "--dataset", val_name, "--output", str(out), "--num-images", "3"]
    assert visualize_detections.main(args) == str(out)
    with Image.open(out) as picture:
        picture.load()
        assert picture.format == "PNG" and min(picture.size) > 100
    with pytest.raises(ValueError, match="not in the dataset"):
        visualize_detections.main([*args[:6], "--output", str(out), "--image-ids", "123456"])
    foreign = _write(tmp_path / "foreign.json", [dict(results[0], image_id=987654)])
    with pytest.raises(ValueError, match="987654"):
        visualize_detections.main(["--results", foreign, "--dataset", val_name, "--output", str(out)])
