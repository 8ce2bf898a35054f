#!/usr/bin/env python
"""Plots the training curves of a run's ``metrics.json``: total loss, each loss group, lr, and bbox AP/AP50.

Loss terms are grouped by the loss (``loss_class``, ``loss_bbox``, ``loss_giou``, ``loss_salience``, ...),
each group summed over its decoder-layer, denoising and encoder copies. AP/AP50 come from the evaluation rows.

Example::

    python scripts/plot_metrics.py --metrics output/demo/metrics.json --output output/demo/curves.png
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from evaluation.visualizer import load_metrics, save_metrics_plot  # noqa: E402

logger = logging.getLogger("plot_metrics")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics", required=True, help="metrics.json of a training run (json lines)")
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--title", help="figure title (default: the run's folder)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    """Runs the script; returns the path of the PNG."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    rows = load_metrics(args.metrics)
    title = args.title or os.path.basename(os.path.dirname(os.path.abspath(args.metrics)))
    path = save_metrics_plot(rows, args.output, title=title)
    logger.info(f"wrote {path} ({len(rows)} rows)")
    return path


if __name__ == "__main__":
    main()
