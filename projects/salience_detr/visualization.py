"""Salience DETR's own picture: the predicted salience per feature level over an image (the paper's Figure 6).

Built on the generic drawing of :mod:`evaluation.visualizer` (boxes, saving); used by
``projects/salience_detr/tools/visualize_salience.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.image import AxesImage

from evaluation.visualizer import draw_boxes, save_figure

__all__ = ["save_salience_figure"]


def _draw_detections(ax: Axes, image: np.ndarray, detections: Sequence[dict], class_names: Sequence[str]) -> None:
    """The image with its detections (``box``, ``label``, ``score`` dicts), titled with their count."""
    ax.imshow(image)
    draw_boxes(
        ax,
        [d["box"] for d in detections],
        [d["label"] for d in detections],
        class_names,
        [d["score"] for d in detections],
    )
    ax.set_title(f"detections ({len(detections)})", fontsize=8)


def _draw_salience(ax: Axes, image: np.ndarray, level: np.ndarray, name: str, alpha: float) -> AxesImage:
    """One level's ``H x W`` salience in [0, 1] over the image (jet colour map); returns the overlay."""
    ax.imshow(image)
    overlay = ax.imshow(np.asarray(level), cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0)
    ax.set_title(f"{name} (max {float(np.max(level)):.2f})", fontsize=8)
    return overlay


def save_salience_figure(
    image: np.ndarray,
    salience: Sequence[np.ndarray],
    detections: Sequence[dict],
    class_names: Sequence[str],
    output: str,
    level_names: Sequence[str] | None = None,
    title: str | None = None,
    alpha: float = 0.55,
    dpi: int = 110,
) -> str:
    """Writes one PNG: the image with its detections, then one panel per feature level with its salience map.

    Args:
        image: ``H x W x 3`` uint8.
        salience: per level, an ``H x W`` array of probabilities in [0, 1] (already upsampled to the image).
        detections: dicts with ``box`` (xyxy pixels), ``label``, ``score``.
        class_names: name of each contiguous label.
        output: path of the PNG.
        level_names: title of each level's panel (default ``level l``).
        title: the figure's title.
        alpha: opacity of the salience overlay.
        dpi: resolution of the figure.

    Returns:
        ``output``.
    """
    if not salience:
        raise ValueError("no salience map to draw")
    panels = 1 + len(salience)
    h, w = image.shape[:2]
    scale = 3.0 / max(h, w)
    fig, axes = plt.subplots(1, panels, figsize=(w * scale * panels + 0.6, h * scale + 0.6), squeeze=False)
    axes = axes[0]
    _draw_detections(axes[0], image, detections, class_names)
    names = level_names if level_names is not None else [f"level {i}" for i in range(len(salience))]
    overlays = [_draw_salience(axes[i + 1], image, level, names[i], alpha) for i, level in enumerate(salience)]
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.4)
    fig.colorbar(overlays[-1], ax=list(axes[1:]), fraction=0.02, pad=0.01, label="salience (sigmoid)")
    return save_figure(fig, output, dpi, tight=True)
