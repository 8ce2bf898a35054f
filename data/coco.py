"""COCO-format json: loading into dataset dicts, registration, and conversion back to COCO json.

Dataset dicts follow DESIGN.md: ``file_name, height, width, image_id, annotations`` with each annotation
``{bbox: [x, y, w, h] (absolute pixels), category_id: contiguous 0..C-1, iscrowd: 0|1}``. Original category
ids are mapped to contiguous ids in sorted order; the mapping is kept in the metadata as
``thing_dataset_id_to_contiguous_id`` so evaluators can map predictions back.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import math
import os
from collections import Counter
from typing import Any

from pycocotools.coco import COCO

from core.fileio import read_json, write_json

from .catalog import DatasetCatalog, MetadataCatalog

__all__ = [
    "CATEGORY_KEYS",
    "category_metadata",
    "coco_json_category_metadata",
    "convert_to_coco_dict",
    "convert_to_coco_json",
    "load_coco_json",
    "register_coco_instances",
]

logger = logging.getLogger(__name__)

_MAX_LISTED_IDS = 5

#: metadata keys derived from a dataset's categories
CATEGORY_KEYS = ("thing_classes", "thing_dataset_id_to_contiguous_id")


def _read_coco(json_file: str) -> COCO:
    """Loads a COCO json quietly; a missing or malformed file raises with its path."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"COCO json file not found: {json_file}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(json_file)
    except json.JSONDecodeError as e:
        raise ValueError(f"{json_file} is not valid json: {e}") from e
    missing = [k for k in ("images", "annotations", "categories") if k not in coco.dataset]
    if missing:
        raise ValueError(f"{json_file} is not a COCO instances file: missing top-level key(s) {missing}")
    return coco


def _check_unique_ids(entries: list[dict], kind: str, json_file: str) -> None:
    counts = Counter(e.get("id") for e in entries)
    duplicates = sorted((i for i, n in counts.items() if n > 1), key=str)
    if duplicates:
        raise ValueError(f"{json_file}: duplicate {kind} ids {duplicates[:_MAX_LISTED_IDS]} ({len(duplicates)} in all)")


def _check_images(images: list[dict], json_file: str) -> None:
    _check_unique_ids(images, "image", json_file)
    for img in images:
        missing = [k for k in ("id", "file_name", "height", "width") if k not in img]
        if missing:
            raise ValueError(f"{json_file}: image {img.get('id', img)!r} lacks key(s) {missing}")


def _is_finite_box(bbox: Any) -> bool:
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return False
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)


def _check_annotation(ann: dict, cat_ids: set, img_ids: set, json_file: str) -> None:
    """Raises ValueError naming the json file and annotation id for an unusable annotation."""
    ann_id = ann.get("id")
    if ann.get("category_id") not in cat_ids:
        raise ValueError(
            f"{json_file}: annotation id {ann_id} has category_id {ann.get('category_id')!r}, "
            f"which is not among the json's categories {sorted(cat_ids)}"
        )
    if ann.get("image_id") not in img_ids:
        image_id = ann.get("image_id")
        raise ValueError(f"{json_file}: annotation id {ann_id} refers to image_id {image_id!r}, which is not an image")
    bbox = ann.get("bbox")
    if bbox is None:
        raise ValueError(f"{json_file}: annotation id {ann_id} has no 'bbox'")
    if not _is_finite_box(bbox):
        raise ValueError(f"{json_file}: annotation id {ann_id} has bbox {bbox!r}; expected 4 finite numbers x, y, w, h")


def _valid_annotations(coco: COCO, json_file: str) -> list[dict]:
    """Checks every annotation; returns those with positive width and height (warns once about the rest)."""
    anns = coco.dataset["annotations"]
    _check_unique_ids(anns, "annotation", json_file)
    cat_ids = {c["id"] for c in coco.dataset["categories"]}
    img_ids = {img["id"] for img in coco.dataset["images"]}
    for ann in anns:
        _check_annotation(ann, cat_ids, img_ids, json_file)
    degenerate = [a["id"] for a in anns if a["bbox"][2] <= 0 or a["bbox"][3] <= 0]
    if degenerate:
        logger.warning(
            f"Dropped {len(degenerate)} annotation(s) with zero or negative width/height in {json_file} "
            f"(annotation ids {degenerate[:_MAX_LISTED_IDS]}{' ...' if len(degenerate) > _MAX_LISTED_IDS else ''})"
        )
    return [a for a in anns if a["bbox"][2] > 0 and a["bbox"][3] > 0]


def category_metadata(categories: list[dict], json_file: str) -> dict[str, Any]:
    """``thing_classes`` and ``thing_dataset_id_to_contiguous_id`` of a COCO json's ``categories``.

    Contiguous ids follow the sorted category ids: the smallest id is label 0. This is the one definition of the
    mapping; the loader, the metadata and hence the evaluator all use it.

    Raises:
        ValueError: a category lacks ``id`` or ``name``, or two categories share an id.
    """
    for cat in categories:
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise ValueError(f"{json_file}: category {cat!r} needs an 'id' and a 'name'")
    _check_unique_ids(categories, "category", json_file)
    cats = sorted(categories, key=lambda c: c["id"])
    return {
        "thing_classes": [str(c["name"]) for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
    }


@functools.lru_cache(maxsize=32)
def _json_category_metadata(json_file: str, mtime_ns: int, size: int) -> dict[str, Any]:
    dataset = read_json(json_file, "COCO json file")
    if not isinstance(dataset, dict) or "categories" not in dataset:
        raise ValueError(f"{json_file} is not a COCO instances file: it has no 'categories'")
    return category_metadata(dataset["categories"], json_file)


def coco_json_category_metadata(json_file: str) -> dict[str, Any]:
    """:func:`category_metadata` of a COCO json file (read once per file version).

    Raises:
        FileNotFoundError: ``json_file`` does not exist.
        ValueError: it is not a COCO instances json.
    """
    json_file = os.fspath(json_file)
    try:
        stat = os.stat(json_file)
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO json file not found: {json_file}") from None
    return dict(_json_category_metadata(os.path.abspath(json_file), stat.st_mtime_ns, stat.st_size))


def load_coco_json(json_file: str, image_root: str, dataset_name: str | None = None) -> list[dict]:
    """Loads a COCO instances json into dataset dicts.

    Args:
        json_file: path of the COCO json.
        image_root: folder the images' ``file_name`` are relative to.
        dataset_name: when given, sets the metadata of that dataset (``thing_classes``,
            ``thing_dataset_id_to_contiguous_id``, ``json_file``, ``image_root``, ``evaluator_type="coco"``).

    Returns:
        One dict per image, sorted by image id. Crowd annotations are kept (``iscrowd=1``); annotations with
        non-positive width or height are dropped with a warning.

    Raises:
        FileNotFoundError: ``json_file`` or ``image_root`` does not exist.
        ValueError: an annotation has an unknown category or image, a missing/invalid bbox, or a duplicate id.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    coco = _read_coco(json_file)
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"Image root of {json_file} not found: {image_root}")
    _check_images(coco.dataset["images"], json_file)
    anns = _valid_annotations(coco, json_file)
    categories = category_metadata(coco.dataset["categories"], json_file)
    id_map = categories["thing_dataset_id_to_contiguous_id"]
    if dataset_name is not None:
        meta = MetadataCatalog.get(dataset_name).set_derived(f"the categories of {json_file}", **categories)
        meta.set(json_file=json_file, image_root=image_root, evaluator_type="coco")
    per_image: dict[Any, list[dict]] = {img["id"]: [] for img in coco.dataset["images"]}
    for ann in anns:
        per_image[ann["image_id"]].append(
            {
                "bbox": [float(v) for v in ann["bbox"]],
                "category_id": id_map[ann["category_id"]],
                "iscrowd": int(ann.get("iscrowd", 0)),
            }
        )
    images = sorted(coco.dataset["images"], key=lambda img: img["id"])
    return [_image_record(img, image_root, per_image[img["id"]]) for img in images]


def _image_record(img: dict, image_root: str, annotations: list[dict]) -> dict:
    return {
        "file_name": os.path.join(image_root, img["file_name"]),
        "height": int(img["height"]),
        "width": int(img["width"]),
        "image_id": img["id"],
        "annotations": annotations,
    }


def register_coco_instances(name: str, metadata: dict, json_file: str, image_root: str) -> None:
    """Registers a COCO-format dataset under ``name``; nothing is read until ``DatasetCatalog.get(name)``.

    Args:
        name: dataset name, e.g. ``"coco_2017_train"``.
        metadata: extra metadata (e.g. ``thing_classes``); it must agree with the json when loaded.
        json_file: path of the COCO instances json.
        image_root: folder holding the images.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    DatasetCatalog.register(name, functools.partial(load_coco_json, json_file, image_root, name))
    meta = MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco", **metadata)
    meta.set_provider(CATEGORY_KEYS, functools.partial(coco_json_category_metadata, json_file))  # read when needed


def _coco_categories(dataset_name: str) -> tuple[list[dict], dict[int, int]]:
    """COCO categories and the contiguous -> original id map of a registered dataset."""
    meta = MetadataCatalog.get(dataset_name)
    classes = meta.get("thing_classes")
    if classes is None:
        raise ValueError(f"Dataset '{dataset_name}' has no metadata 'thing_classes'; cannot build COCO categories")
    to_original = {v: k for k, v in (meta.get("thing_dataset_id_to_contiguous_id") or {}).items()}
    to_original = {i: to_original.get(i, i) for i in range(len(classes))}
    return [{"id": to_original[i], "name": n} for i, n in enumerate(classes)], to_original


def convert_to_coco_dict(dataset_name: str) -> dict:
    """Builds a COCO instances dict from the dataset dicts of a registered dataset.

    Categories use the original ids from ``thing_dataset_id_to_contiguous_id`` when present (else the
    contiguous ids). Annotation ``area`` is taken from the dict when present, else the box area ``w * h``.

    Returns:
        dict with ``info``, ``images``, ``annotations`` (ids from 1, with ``area`` and ``iscrowd``), ``categories``.
    """
    dicts = DatasetCatalog.get(dataset_name)  # loading may set the metadata
    categories, to_original = _coco_categories(dataset_name)
    images, annotations = [], []
    for record in dicts:
        images.append(
            {
                "id": record["image_id"],
                "width": record["width"],
                "height": record["height"],
                "file_name": record["file_name"],
            }
        )
        for ann in record.get("annotations", []):
            x, y, w, h = (float(v) for v in ann["bbox"])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": record["image_id"],
                    "bbox": [x, y, w, h],
                    "area": float(ann.get("area", w * h)),
                    "iscrowd": int(ann.get("iscrowd", 0)),
                    "category_id": to_original[ann["category_id"]],
                }
            )
    info = {"description": f"Converted from dataset '{dataset_name}'"}
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}


def convert_to_coco_json(dataset_name: str, output_file: str, allow_cached: bool = True) -> None:
    """Writes :func:`convert_to_coco_dict` of ``dataset_name`` to ``output_file`` atomically.

    Args:
        dataset_name: a registered dataset.
        output_file: json path; written via a temporary file in the same folder and ``os.replace``.
        allow_cached: keep an existing ``output_file`` instead of rewriting it.
    """
    if allow_cached and os.path.exists(output_file):
        logger.info(f"Using cached COCO json of '{dataset_name}' at {output_file}")
        return
    write_json(convert_to_coco_dict(dataset_name), output_file)
    logger.info(f"Wrote COCO json of '{dataset_name}' to {output_file}")
