"""Error analysis of COCO-format detections: per-class precision-recall curves and a confusion matrix.

Both work on a pycocotools ``COCO`` ground truth and a list of COCO results (``coco_instances_results.json``:
``image_id``, ``category_id`` in the json's ids, ``bbox`` xywh, ``score``); ``scripts/analyze_detections.py``
is the command line.

* :func:`precision_recall_curves`: ``COCOeval``'s interpolated precision at 101 recall points, at one IoU
  threshold, area ``all``, ``maxDets`` 100 (``eval["precision"][t, :, k, 0, -1]``): 0 at recall levels never
  reached; -1 (a class without ground truth) becomes NaN.
* :func:`confusion_matrix`: ``(C + 1) x (C + 1)`` counts, rows = ground-truth class, columns = predicted class,
  the last row/column "background". Per image, the detections with ``score >= score_threshold`` are taken best
  first; each is matched greedily to the not yet matched ground-truth box with IoU ``>= iou_threshold``,
  preferring a box of its own class, then the highest IoU: ``[gt, pred] += 1``. An unmatched detection counts in
  ``[background, pred]`` (false positive), an unmatched ground-truth box in ``[gt, background]`` (missed).
  Crowd boxes are ignored, and so are detections whose best IoU with them reaches the threshold.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Sequence

import numpy as np

__all__ = [
    "confusion_matrix",
    "normalize_rows",
    "plot_confusion_matrix",
    "plot_precision_recall",
    "precision_recall_curves",
    "save_confusion_matrix_json",
]

BACKGROUND = "background"


def _categories(coco_gt) -> tuple[list[int], list[str]]:
    """Category ids (sorted) and names of the ground truth."""
    ids = sorted(coco_gt.getCatIds())
    return ids, [coco_gt.cats[i]["name"] for i in ids]


def precision_recall_curves(
    coco_gt, results: Sequence[dict], iou_threshold: float = 0.5
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Recall points ``[101]`` and, per class name, the interpolated precision ``[101]`` (NaN where undefined).

    Raises:
        ValueError: ``iou_threshold`` is not one of COCOeval's thresholds (0.50, 0.55, ..., 0.95).
    """
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(list(results)) if results else None
        if coco_dt is None:
            raise ValueError("no detections to evaluate")
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    thresholds = evaluator.params.iouThrs
    matches = np.flatnonzero(np.isclose(thresholds, iou_threshold))
    if matches.size == 0:
        raise ValueError(f"iou {iou_threshold} is not one of COCOeval's thresholds {np.round(thresholds, 2).tolist()}")
    area = evaluator.params.areaRngLbl.index("all")
    max_det = evaluator.params.maxDets.index(100)
    precision = evaluator.eval["precision"][matches[0], :, :, area, max_det].astype(np.float64)  # [R, K]
    precision[precision < 0] = np.nan
    ids, names = _categories(coco_gt)
    column = {cat: k for k, cat in enumerate(evaluator.params.catIds)}
    curves = {name: precision[:, column[cat]] for cat, name in zip(ids, names)}
    return np.asarray(evaluator.params.recThrs, dtype=np.float64), curves


def _iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``[N, M]`` of xywh boxes."""
    a_xyxy = np.concatenate([a[:, :2], a[:, :2] + a[:, 2:]], 1)
    b_xyxy = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)
    lt = np.maximum(a_xyxy[:, None, :2], b_xyxy[None, :, :2])
    rb = np.minimum(a_xyxy[:, None, 2:], b_xyxy[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    union = a[:, 2:].prod(-1)[:, None] + b[:, 2:].prod(-1)[None, :] - inter
    return inter / np.maximum(union, 1e-12)


def confusion_matrix(
    coco_gt, results: Sequence[dict], iou_threshold: float = 0.5, score_threshold: float = 0.3
) -> tuple[np.ndarray, list[str]]:
    """Counts ``[C + 1, C + 1]`` (rows ground truth, columns prediction, last = background) and the labels.

    See the module docstring for the matching rule.
    """
    ids, names = _categories(coco_gt)
    index = {cat: k for k, cat in enumerate(ids)}
    background = len(ids)
    matrix = np.zeros((background + 1, background + 1), dtype=np.int64)
    by_image: dict = {}
    for det in results:
        if det["score"] >= score_threshold:
            if det["category_id"] not in index:
                raise ValueError(f"detection of image {det['image_id']} has unknown category_id {det['category_id']}")
            by_image.setdefault(det["image_id"], []).append(det)
    for image_id in sorted(set(coco_gt.getImgIds()) | set(by_image), key=str):
        anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[image_id])) if image_id in coco_gt.imgs else []
        gts = [a for a in anns if not a.get("iscrowd", 0)]
        crowds = [a for a in anns if a.get("iscrowd", 0)]
        gt_boxes = np.asarray([a["bbox"] for a in gts], dtype=np.float64).reshape(-1, 4)
        gt_labels = np.asarray([index[a["category_id"]] for a in gts], dtype=np.int64)
        crowd_boxes = np.asarray([a["bbox"] for a in crowds], dtype=np.float64).reshape(-1, 4)
        dets = sorted(by_image.get(image_id, []), key=lambda d: -d["score"])
        matched = np.zeros(len(gts), dtype=bool)
        for det in dets:
            box = np.asarray([det["bbox"]], dtype=np.float64)
            label = index[det["category_id"]]
            iou = _iou_xywh(box, gt_boxes)[0] if len(gts) else np.zeros(0)
            candidates = np.flatnonzero((iou >= iou_threshold) & ~matched)
            if candidates.size:
                same = candidates[gt_labels[candidates] == label]
                pool = same if same.size else candidates
                best = pool[np.argmax(iou[pool])]
                matched[best] = True
                matrix[gt_labels[best], label] += 1
            elif len(crowds) and _iou_xywh(box, crowd_boxes).max() >= iou_threshold:
                continue
            else:
                matrix[background, label] += 1
        for gt_label in gt_labels[~matched]:
            matrix[gt_label, background] += 1
    return matrix, names + [BACKGROUND]


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (rows summing to 0 stay 0)."""
    sums = matrix.sum(1, keepdims=True).astype(np.float64)
    return np.divide(matrix, sums, out=np.zeros(matrix.shape, dtype=np.float64), where=sums > 0)


def save_confusion_matrix_json(
    path: str, matrix: np.ndarray, labels: Sequence[str], iou_threshold: float, score_threshold: float
) -> None:
    """Writes ``{labels, iou_threshold, score_threshold, counts, normalized}`` (rows ground truth)."""
    payload = {
        "labels": list(labels),
        "rows": "ground truth",
        "columns": "prediction",
        "iou_threshold": iou_threshold,
        "score_threshold": score_threshold,
        "counts": matrix.tolist(),
        "normalized": np.round(normalize_rows(matrix), 6).tolist(),
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_precision_recall(recall: np.ndarray, curves: dict[str, np.ndarray], path: str, iou_threshold: float) -> None:
    """One PNG with a precision-recall curve per class (legend: class and AP at that IoU)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, precision in curves.items():
        ap = float(np.nanmean(precision)) if np.isfinite(precision).any() else float("nan")
        ax.plot(recall, precision, label=f"{name} (AP {ap * 100:.1f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(f"precision-recall, IoU {iou_threshold:.2f}, area all, maxDets 100")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion_matrix(matrix: np.ndarray, labels: Sequence[str], path: str, normalized: bool = False) -> None:
    """The matrix as a heat map with its values written in the cells."""
    plt = _pyplot()
    values = normalize_rows(matrix) if normalized else matrix
    size = max(4.0, 0.7 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(values, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(
        xlabel="prediction",
        ylabel="ground truth",
        title="confusion matrix" + (" (row-normalised)" if normalized else ""),
    )
    peak = values.max() if values.size else 0
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            text = f"{values[i, j]:.2f}" if normalized else str(int(values[i, j]))
            ax.text(j, i, text, ha="center", va="center", color="white" if values[i, j] > peak / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
