"""LP-DETR's own picture: the relation mixing weights Lambda per decoder layer (the paper's Figure 3).

Built on the generic drawing of :mod:`evaluation.visualizer` (class colours, saving); used by
``projects/lp_detr/tools/visualize_relation_weights.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Patch

from evaluation.visualizer import class_color, save_figure

__all__ = ["save_relation_weights_plot"]


def _draw_bars(ax: Axes, weights: np.ndarray, scopes: Sequence[str], unused: set[int]) -> None:
    """Grouped bars, one group per decoder layer and one bar per scope; unused rows hatched and faded."""
    num_layers, num_scopes = weights.shape
    width = 0.8 / num_scopes
    x = np.arange(num_layers)
    for j, scope in enumerate(scopes):
        bars = ax.bar(x + (j - (num_scopes - 1) / 2) * width, weights[:, j], width, label=scope, color=class_color(j))
        for i, bar in enumerate(bars):
            if i in unused:
                bar.set_alpha(0.35)
                bar.set_hatch("//")
    ax.set_xticks(x, [f"{i}" + (" (unused)" if i in unused else "") for i in range(num_layers)], fontsize=8)


def _legend(ax: Axes, weights: np.ndarray, scopes: Sequence[str], unused: set[int]) -> None:
    """One legend entry per scope (and one for unused rows), above the bars: the y range leaves room for it."""
    handles = [Patch(facecolor=class_color(j), label=scope) for j, scope in enumerate(scopes)]
    if unused:
        handles.append(Patch(facecolor="lightgray", hatch="//", label="unused by the model"))
    top = float(np.nanmax(weights)) if weights.size else 1.0
    ax.set_ylim(min(0.0, float(np.nanmin(weights)) * 1.1), max(top, 1e-6) * 1.35)
    ax.legend(handles=handles, fontsize=7, ncol=len(handles), loc="upper center")


def save_relation_weights_plot(
    table: Sequence[Sequence[float]],
    output: str,
    scopes: Sequence[str] = ("local", "medium", "global"),
    unused_rows: Sequence[int] = (0,),
    title: str | None = None,
    dpi: int = 110,
) -> str:
    """Writes LP-DETR's mixing weights Lambda per decoder layer as grouped bars.

    Args:
        table: ``[L, S]`` weights, one row per decoder layer, one column per scope.
        output: path of the PNG.
        scopes: name of each column.
        unused_rows: rows the model does not use (layer 0 has no relation bias); hatched and labelled.
        title: the axes' title.
        dpi: resolution of the figure.

    Returns:
        ``output``.

    Raises:
        ValueError: ``table`` is not ``[L, len(scopes)]``.
    """
    weights = np.asarray(table, dtype=float)
    if weights.ndim != 2 or weights.shape[1] != len(scopes):
        raise ValueError(f"expected a [num_layers, {len(scopes)}] table, got shape {weights.shape}")
    unused = set(int(r) for r in unused_rows)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * weights.shape[0] + 1.5), 3.4))
    _draw_bars(ax, weights, scopes, unused)
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("weight $\\lambda$")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.grid(axis="y", alpha=0.3)
    _legend(ax, weights, scopes, unused)
    ax.set_title(title or "LP-DETR relation weights per decoder layer", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, output, dpi)
