"""Generic pictures: detections over images (ground truth alongside), training curves, one colour per class.

Drawing uses matplotlib's non-interactive Agg backend, so it works on a machine without a display. Colours are
one per class (matplotlib's ``tab10`` cycle); detections are solid boxes labelled ``"name 0.87"``, ground-truth
boxes are dashed white. A paper's own figures live in its project (``projects/<paper>/visualization.py``) and
build on :func:`class_color`, :func:`draw_boxes` and :func:`save_figure`.
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
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from core.fileio import read_json  # noqa: E402

__all__ = [
    "class_color",
    "draw_boxes",
    "load_coco_results",
    "load_metrics",
    "save_detection_grid",
    "save_figure",
    "save_metrics_plot",
]


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
    entries = read_json(path, "results file")
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
    show_scores: bool = True,
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
        show_scores: write ``"name score"`` on each box; False writes the name only (``score`` not needed).

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
        scores = [d["score"] for d in dets] if show_scores else None
        draw_boxes(ax, [d["box"] for d in dets], [d["label"] for d in dets], class_names, scores)
        if titles is not None:
            ax.set_title(titles[index], fontsize=8)
    if ground_truths is not None:
        fig.suptitle("boxes: detections (class score); dashed white: ground truth", fontsize=8)
    fig.tight_layout(pad=0.4, rect=(0, 0, 1, 0.97) if ground_truths is not None else None)
    return save_figure(fig, output, dpi)


def save_figure(fig: Figure, output: str, dpi: int, tight: bool = False) -> str:
    """Writes ``fig`` to ``output`` (folders are created) and closes it.

    Args:
        fig: the figure.
        output: path of the picture; its extension picks the format.
        dpi: resolution.
        tight: crop the figure to its drawn content (``bbox_inches="tight"``).

    Returns:
        ``output``.
    """
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=dpi, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return output


def load_metrics(path: str) -> list[dict]:
    """Rows of a ``metrics.json`` (one json object per line); the last row wins for a repeated iteration."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"metrics file not found: {path}")
    rows: dict[int, dict] = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number} is not a json object: {error}") from error
            if not isinstance(row, dict) or "iteration" not in row:
                raise ValueError(f"{path}:{number}: expected a json object with an 'iteration' key")
            rows.setdefault(int(row["iteration"]), {}).update(row)
    if not rows:
        raise ValueError(f"{path} has no rows")
    return [rows[k] for k in sorted(rows)]


def _loss_group(key: str) -> str:
    """``loss_class_dn_0`` -> ``loss_class``: terms grouped by the loss, summed over layers/denoising/encoder."""
    parts = key.split("_")
    return "_".join(parts[:2]) if len(parts) >= 2 else key


def save_metrics_plot(rows: Sequence[dict], output: str, title: str | None = None, dpi: int = 110) -> str:
    """Writes training curves: total loss, each loss group (summed over its terms), lr, and bbox AP/AP50.

    Args:
        rows: ``metrics.json`` rows (see :func:`load_metrics`).
        output: path of the PNG.
    """
    train = [r for r in rows if "total_loss" in r or any(k.startswith("loss_") for k in r)]
    evals = [r for r in rows if any(k.startswith("bbox/") for k in r)]
    if not train and not evals:
        raise ValueError("the metrics have neither losses nor bbox evaluation rows")
    groups: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in train:
        sums: dict[str, float] = defaultdict(float)
        for k, v in r.items():
            if k.startswith("loss_") and isinstance(v, (int, float)):
                sums[_loss_group(k)] += float(v)
        for g, v in sums.items():
            groups[g].append((r["iteration"], v))
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), squeeze=False)
    (ax_total, ax_groups), (ax_lr, ax_ap) = axes
    total = [(r["iteration"], r["total_loss"]) for r in train if "total_loss" in r]
    if total:
        ax_total.plot(*zip(*total), color="black")
    ax_total.set_title("total loss", fontsize=9)
    for index, (g, points) in enumerate(sorted(groups.items())):
        ax_groups.plot(*zip(*points), label=g, color=class_color(index))
    ax_groups.set_title("loss terms (summed over layers, denoising, encoder)", fontsize=9)
    if groups:
        ax_groups.legend(fontsize=7)
    lr = [(r["iteration"], r["lr"]) for r in train if "lr" in r]
    if lr:
        ax_lr.plot(*zip(*lr), color="tab:purple")
    ax_lr.set_title("learning rate", fontsize=9)
    for index, key in enumerate(("bbox/AP", "bbox/AP50")):
        points = [(r["iteration"], r[key]) for r in evals if isinstance(r.get(key), (int, float))]
        if points:
            ax_ap.plot(*zip(*points), marker="o", label=key, color=class_color(index))
            ax_ap.annotate(f"{points[-1][1]:.1f}", points[-1], fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax_ap.set_title("evaluation", fontsize=9)
    if evals:
        ax_ap.legend(fontsize=7)
    else:
        ax_ap.text(0.5, 0.5, "no evaluation rows", ha="center", va="center", transform=ax_ap.transAxes)
    for ax in axes.ravel():
        ax.set_xlabel("iteration", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, output, dpi)
