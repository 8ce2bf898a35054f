"""Pictures of detections: boxes with class names and scores over the image, ground truth alongside.

Drawing uses matplotlib's non-interactive Agg backend, so it works on a machine without a display. Colours are
one per class (matplotlib's ``tab10`` cycle); detections are solid boxes labelled ``"name 0.87"``, ground-truth
boxes are dashed white.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

__all__ = ["class_color", "draw_boxes", "load_coco_results", "save_detection_grid"]


def class_color(label: int) -> tuple[float, float, float]:
    """RGB colour (0..1) of a contiguous class label."""
    return tuple(plt.get_cmap("tab10")(label % 10)[:3])


def load_coco_results(path: str, dataset_id_to_contiguous: Mapping[int, int]) -> dict[int, list[dict]]:
    """Reads a COCO results json (``coco_instances_results.json``) into detections per image.

    Args:
        path: list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
        dataset_id_to_contiguous: the dataset's category-id mapping (its metadata
            ``thing_dataset_id_to_contiguous_id``).

    Returns:
        ``{image_id: [{"box": [x0, y0, x1, y1], "label": contiguous label, "score": float}, ...]}``, each list
        sorted by decreasing score.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a list of detections, an entry lacks a key, its bbox is not 4 numbers, or its
            category id is not one of the dataset's.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"results file not found: {path}")
    with open(path) as f:
        try:
            entries = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid json: {error}") from error
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of detections, got a {type(entries).__name__}")
    per_image: dict[int, list[dict]] = defaultdict(list)
    for index, entry in enumerate(entries):
        missing = {"image_id", "category_id", "bbox", "score"} - set(entry)
        if missing:
            raise ValueError(f"{path}: detection #{index} lacks {sorted(missing)}")
        bbox = entry["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise ValueError(f"{path}: detection #{index} has a malformed bbox {bbox!r} (expected [x, y, w, h])")
        if entry["category_id"] not in dataset_id_to_contiguous:
            raise ValueError(
                f"{path}: detection #{index} has category_id {entry['category_id']}, which the dataset does not "
                f"have (its ids: {sorted(dataset_id_to_contiguous)})"
            )
        x, y, w, h = bbox
        per_image[entry["image_id"]].append(
            {
                "box": [x, y, x + w, y + h],
                "label": dataset_id_to_contiguous[entry["category_id"]],
                "score": float(entry["score"]),
            }
        )
    for detections in per_image.values():
        detections.sort(key=lambda d: -d["score"])
    return dict(per_image)


def draw_boxes(
    ax: Axes,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int],
    class_names: Sequence[str],
    scores: Sequence[float] | None = None,
    ground_truth: bool = False,
) -> None:
    """Draws boxes on an axes that shows an image in pixel coordinates.

    Args:
        ax: the axes (``imshow`` already called).
        boxes: ``[N, 4]`` xyxy in pixels.
        labels: ``N`` contiguous labels.
        class_names: name of each label.
        scores: ``N`` scores, written after the class name; ``None`` writes the name only.
        ground_truth: dashed white boxes without text (the predictions carry the names).
    """
    for index, (box, label) in enumerate(zip(boxes, labels)):
        x0, y0, x1, y1 = (float(v) for v in box)
        if ground_truth:
            ax.add_patch(
                Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="white", linestyle="--", linewidth=0.9)
            )
            continue
        color = class_color(int(label))
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1.6))
        text = class_names[int(label)] if scores is None else f"{class_names[int(label)]} {float(scores[index]):.2f}"
        near_top = y0 < 12  # a label above the box would leave the image: put it just inside instead
        ax.text(
            x0,
            y0 + 1 if near_top else y0 - 1,
            text,
            fontsize=7,
            color="white",
            va="top" if near_top else "bottom",
            ha="left",
            bbox={"facecolor": color, "edgecolor": "none", "pad": 1.0, "alpha": 0.85},
            clip_on=True,
        )


def save_detection_grid(
    images: Sequence[np.ndarray],
    detections: Sequence[Sequence[dict]],
    class_names: Sequence[str],
    output: str,
    ground_truths: Sequence[Sequence[dict]] | None = None,
    titles: Sequence[str] | None = None,
    columns: int = 4,
    dpi: int = 110,
) -> str:
    """Writes one PNG with a panel per image: its detections, and its ground truth dashed if given.

    Args:
        images: ``H x W x 3`` uint8 arrays.
        detections: per image, dicts with ``box`` (xyxy pixels), ``label`` and ``score`` (already thresholded).
        class_names: name of each contiguous label.
        output: path of the PNG (folders are created).
        ground_truths: per image, dicts with ``box`` and ``label``.
        titles: one title per panel.
        columns: panels per row.
        dpi: resolution of the figure.

    Returns:
        ``output``.
    """
    if not images:
        raise ValueError("no images to draw")
    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    panel_w = max(img.shape[1] for img in images) / 100.0
    panel_h = max(img.shape[0] for img in images) / 100.0
    fig, axes = plt.subplots(rows, columns, figsize=(panel_w * columns, panel_h * rows + 0.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for index, image in enumerate(images):
        ax = axes.ravel()[index]
        ax.imshow(image)
        if ground_truths is not None:
            gt = ground_truths[index]
            draw_boxes(ax, [g["box"] for g in gt], [g["label"] for g in gt], class_names, ground_truth=True)
        dets = detections[index]
        draw_boxes(ax, [d["box"] for d in dets], [d["label"] for d in dets], class_names, [d["score"] for d in dets])
        if titles is not None:
            ax.set_title(titles[index], fontsize=8)
    if ground_truths is not None:
        fig.suptitle("boxes: detections (class score); dashed white: ground truth", fontsize=8)
    fig.tight_layout(pad=0.4, rect=(0, 0, 1, 0.97) if ground_truths is not None else None)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=dpi)
    plt.close(fig)
    return output
