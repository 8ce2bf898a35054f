#!/usr/bin/env python
"""Writes the synthetic industrial-inspection dataset (COCO format) and prints a summary.

Example::

    python scripts/make_synthetic_dataset.py --output datasets/synthetic --num-train 400 --num-val 100 --seed 0

``--custom`` writes the same kind of images laid out like a user's own data instead (``OUT/train.json``,
``OUT/train/``, ``OUT/val.json``, ``OUT/val/``; colour JPEG, your category ids and names), to try the own-data
flow of the README::

    python scripts/make_synthetic_dataset.py --custom --output my_data --categories 1:scratch 2:dent 3:stain
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from data.synthetic import (  # noqa: E402
    dataset_summary,
    default_synthetic_root,
    generate_custom_coco,
    generate_synthetic_coco,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=default_synthetic_root(), help="dataset folder (default: %(default)s)")
    parser.add_argument("--num-train", type=int, default=400, help="training images (default: %(default)s)")
    parser.add_argument("--num-val", type=int, default=100, help="validation images (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default: %(default)s)")
    parser.add_argument(
        "--custom", action="store_true", help="own-data layout: OUT/{train,val}.json + OUT/{train,val}/"
    )
    parser.add_argument(
        "--categories",
        nargs="+",
        default=["1:scratch", "2:dent", "3:stain"],
        metavar="ID:NAME",
        help="with --custom: 1 to 4 categories (default: %(default)s)",
    )
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg", help="with --custom (default: %(default)s)")
    return parser.parse_args(argv)


def parse_categories(items: list[str]) -> list[tuple[int, str]]:
    """``["1:scratch", ...]`` -> ``[(1, "scratch"), ...]``; a malformed item is an error naming it."""
    categories = []
    for item in items:
        cat_id, sep, name = item.partition(":")
        if not sep or not name or not cat_id.strip().lstrip("-").isdigit():
            raise SystemExit(f"--categories: expected ID:NAME (e.g. 4:scratch), got {item!r}")
        categories.append((int(cat_id), name))
    return categories


def format_summary(split: str, summary: dict) -> str:
    """One block of text: image counts, instances per class and per COCO size."""
    classes = ", ".join(f"{name}: {n}" for name, n in summary["instances"].items())
    sizes = ", ".join(f"{name}: {n}" for name, n in summary["sizes"].items())
    return (
        f"[{split}] {summary['images']} images ({summary['empty_images']} without objects), "
        f"{sum(summary['instances'].values())} instances\n"
        f"  per class: {classes}\n"
        f"  per COCO size (area < 32^2 small, < 96^2 medium, else large): {sizes}"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.custom:
        json_files = generate_custom_coco(
            args.output, parse_categories(args.categories), args.format, args.num_train, args.num_val, args.seed
        )
    else:
        json_files = generate_synthetic_coco(args.output, args.num_train, args.num_val, args.seed)
    print(f"Wrote the synthetic dataset to {os.path.abspath(args.output)} in {time.perf_counter() - start:.1f} s")
    for split, json_file in json_files.items():
        print(format_summary(split, dataset_summary(json_file)))


if __name__ == "__main__":
    main()
