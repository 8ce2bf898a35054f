"""Confusion matrix and precision-recall curves on hand-made ground truth and detections with known answers."""

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from evaluation.analysis import confusion_matrix, normalize_rows, precision_recall_curves

# categories 10 ("cat") and 20 ("dog"): json ids that are not contiguous on purpose
GT = {
    "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
    "categories": [{"id": 20, "name": "dog"}, {"id": 10, "name": "cat"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 10, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 20, "bbox": [50, 50, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 10, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0},
        {"id": 4, "image_id": 2, "category_id": 20, "bbox": [60, 0, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 5, "image_id": 2, "category_id": 10, "bbox": [0, 70, 30, 30], "area": 900, "iscrowd": 1},
    ],
}


def _coco():
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(GT))
        coco.createIndex()
    return coco


def _det(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


DETECTIONS = [
    _det(1, 10, [0, 0, 10, 10], 0.9),  # cat -> cat
    _det(1, 10, [0, 0, 10, 11], 0.8),  # duplicate of a matched cat: false positive (background row)
    _det(1, 10, [50, 50, 20, 20], 0.7),  # dog predicted as cat
    _det(2, 20, [10, 10, 30, 30], 0.6),  # cat predicted as dog
    _det(2, 20, [90, 90, 5, 5], 0.5),  # nothing there: false positive dog
    _det(2, 10, [0, 70, 30, 30], 0.95),  # on the crowd box: ignored
    _det(2, 20, [60, 0, 20, 20], 0.2),  # below the score threshold: dog 4 is missed
]


def test_confusion_matrix_known_counts():
    matrix, labels = confusion_matrix(_coco(), DETECTIONS, iou_threshold=0.5, score_threshold=0.3)
    assert labels == ["cat", "dog", "background"]  # sorted by category id
    #                   pred: cat dog bg
    expected = np.array(
        [
            [1, 1, 0],  # gt cat: one right, one called dog
            [1, 0, 1],  # gt dog: one called cat, one missed
            [1, 1, 0],
        ]
    )  # background: a duplicate cat and a stray dog
    np.testing.assert_array_equal(matrix, expected)
    np.testing.assert_allclose(normalize_rows(matrix)[0], [0.5, 0.5, 0.0])


def test_confusion_matrix_prefers_the_same_class_and_respects_thresholds():
    # a cat box overlapping a dog GT (IoU 0.89) and a cat GT (IoU 0.80): matched to the cat, its own class
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 9], "area": 90, "iscrowd": 0},
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
    matrix, _ = confusion_matrix(coco, [_det(1, 1, [0, 0, 10, 8], 0.9)], 0.5, 0.3)
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 0, 1], [0, 0, 0]])
    matrix, _ = confusion_matrix(coco, [_det(1, 1, [0, 0, 10, 8], 0.9)], 0.9, 0.3)  # IoU too low: FP + 2 missed
    np.testing.assert_array_equal(matrix, [[0, 0, 1], [0, 0, 1], [1, 0, 0]])
    matrix, _ = confusion_matrix(coco, [_det(1, 1, [0, 0, 10, 8], 0.9)], 0.85, 0.3)  # only the dog is close enough
    np.testing.assert_array_equal(matrix, [[0, 0, 1], [1, 0, 0], [0, 0, 0]])
    matrix, _ = confusion_matrix(coco, [_det(1, 1, [0, 0, 10, 8], 0.29)], 0.5, 0.3)  # below the score threshold
    np.testing.assert_array_equal(matrix, [[0, 0, 1], [0, 0, 1], [0, 0, 0]])


def test_precision_recall_curves():
    recall, curves = precision_recall_curves(_coco(), DETECTIONS, iou_threshold=0.5)
    assert recall.shape == (101,) and list(curves) == ["cat", "dog"]
    # cat: 2 GTs; detections by score 0.9 TP, 0.8 FP, 0.7 FP (on a dog): recall 0.5 at best -> precision 1 up to
    # 0.5, then 0 (COCOeval's value for recall levels never reached)
    cat = curves["cat"]
    np.testing.assert_allclose(cat[recall <= 0.5], 1.0)
    np.testing.assert_array_equal(cat[recall > 0.5], 0.0)
    # dog: 2 GTs; 0.6 FP, 0.5 FP, 0.2 TP -> precision 1/3 up to recall 0.5
    np.testing.assert_allclose(curves["dog"][recall <= 0.5], 1 / 3, rtol=1e-6)
    with pytest.raises(ValueError, match="COCOeval's thresholds"):
        precision_recall_curves(_coco(), DETECTIONS, iou_threshold=0.42)


def test_command_line(tmp_path, monkeypatch):
    from scripts import analyze_detections

    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(GT))
    results = tmp_path / "results.json"
    results.write_text(json.dumps(DETECTIONS))
    monkeypatch.setattr(analyze_detections, "load_ground_truth", lambda name: _coco())
    out = tmp_path / "out"
    assert analyze_detections.main(["--results", str(results), "--dataset", "x", "--output", str(out)]) == 0
    for name in ("precision_recall.png", "confusion_matrix.png", "confusion_matrix_normalized.png"):
        assert (out / name).stat().st_size > 0
    payload = json.loads((out / "confusion_matrix.json").read_text())
    assert payload["labels"] == ["cat", "dog", "background"]
    assert payload["counts"] == [[1, 1, 0], [1, 0, 1], [1, 1, 0]]
