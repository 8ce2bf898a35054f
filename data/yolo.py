"""Ultralytics YOLO detection datasets: class lists, conversion to and from COCO json, registration.

Layout (ultralytics)::

    ds/images/train/x.jpg         images (sub-folders allowed)
    ds/labels/train/x.txt         one line per object: ``class cx cy w h``, all but ``class`` normalised to [0, 1]
    ds/data.yaml                  ``names: [a, b, ...]`` or ``names: {0: a, 1: b, ...}``; or a ``classes.txt``

An image without a label file has no objects (the YOLO convention); a label file without an image is an error.
Segmentation lines (``class x1 y1 x2 y2 ... xn yn``, n >= 3) are converted to the bounding box of their
polygon, so ultralytics segmentation datasets train detectors as they are. Pose labels (boxes followed by
keypoints) are not supported. Every malformed line is collected and reported in one ``ValueError`` that names
``file:line`` and the problem. Coordinates may exceed [0, 1] by :data:`COORD_TOLERANCE`; box edges that stick out
of the image are clipped to it (a warning counts those clipped by more than the tolerance). Files and folders whose
name starts with a dot are skipped, and so is a ``classes.txt`` at the top of the label folder (labelImg's class
list) unless an image is named ``classes``.

Category ids: YOLO class ``k`` becomes COCO category id ``k`` (0-based), so the dataset's ids and class order are
the user's. :func:`data.coco.category_metadata` maps ids to contiguous labels in sorted id order, hence the
contiguous label of class ``k`` is ``k`` again and ``thing_classes`` is the class file's list, in its order.
Evaluation reports the YOLO indices as category ids and the user's names per class.

Registration (:func:`register_yolo_instances`) reads nothing. On first use the dataset is converted to a COCO json
cache file, which then goes through :func:`data.coco.load_coco_json` exactly like a COCO dataset; the metadata
``json_file`` (what :class:`evaluation.COCOEvaluator` reads) is that cache file, derived on first access, and
``thing_classes`` / ``thing_dataset_id_to_contiguous_id`` come from the class file on first access. The cache file
lies next to the label folder (``ds/labels/train.yolo2coco-<hash>.json``, like ultralytics' ``labels/train.cache``),
or under ``~/.cache/detr/yolo`` where that folder is not writable; ``<hash>`` identifies the image folder, label
folder and class file, so the path is stable and the evaluator's ``json_file`` stays valid. The file starts with a
key hashing the class names and every image's and label file's relative path, size and modification time; when
the key differs (labels edited, images added) the dataset is converted again and the file replaced atomically.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from core.fileio import write_json

from .catalog import DatasetCatalog, MetadataCatalog
from .coco import CATEGORY_KEYS, category_metadata, load_coco_json
from .mapper import IMAGE_EXTENSIONS, read_image_size

__all__ = [
    "COORD_TOLERANCE",
    "coco_dict_to_yolo",
    "default_label_dir",
    "parse_yolo_line",
    "read_yolo_classes",
    "register_yolo_instances",
    "yolo_coco_json",
    "yolo_to_coco_dict",
]

logger = logging.getLogger(__name__)

#: how far a normalised coordinate may lie outside [0, 1] (rounding of exporters) before it is an error
COORD_TOLERANCE = 1e-3
_MAX_LISTED = 200  # problems listed in one error message (the count is always complete)
_CACHE_VERSION = 1  # bump when the conversion changes, so older caches are not reused
_LABELIMG_CLASSES = "classes.txt"  # labelImg writes the class list into the label folder

PathOrNames = str | os.PathLike | Sequence[str]


# ---------------------------------------------------------------------------------------------------------------
# Class lists
# ---------------------------------------------------------------------------------------------------------------


def read_yolo_classes(path: str | os.PathLike) -> list[str]:
    """Class names of a YOLO dataset, index ``k`` at position ``k``.

    Args:
        path: an ultralytics ``data.yaml`` (``.yaml``/``.yml``; ``names:`` a list, or a dict ``{index: name}``
            with indices ``0..C-1``), or a text file with one name per line (``classes.txt``, ``obj.names``;
            blank lines and surrounding spaces are ignored).

    Returns:
        the ``C`` names.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: naming the file: no ``names``, an empty list, dict indices not ``0..C-1``, an empty or
            duplicate name.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"YOLO class file not found: {path}")
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    is_yaml = path.lower().endswith((".yaml", ".yml"))
    names = _names_from_yaml(path, text) if is_yaml else [line.strip() for line in text.splitlines() if line.strip()]
    return _checked_names(path, names)


def _names_from_yaml(path: str, text: str) -> list:
    import yaml

    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(content, dict) or "names" not in content:
        raise ValueError(f"{path} has no 'names' key (expected 'names: [a, b, ...]' or 'names: {{0: a, 1: b}}')")
    names = content["names"]
    if isinstance(names, dict):
        indices = list(names)
        if not all(type(i) is int for i in indices) or sorted(indices) != list(range(len(indices))):
            raise ValueError(f"{path}: 'names' indices must be 0..{len(names) - 1}, got {indices}")
        return [names[i] for i in range(len(names))]
    if not isinstance(names, list):
        raise ValueError(f"{path}: 'names' must be a list or an {{index: name}} dict, got {type(names).__name__}")
    return names


def _checked_names(source: str, names: Sequence) -> list[str]:
    if not names:
        raise ValueError(f"{source} lists no class names")
    bad = [n for n in names if not isinstance(n, (str, int)) or isinstance(n, bool) or not str(n).strip()]
    if bad:
        raise ValueError(f"{source}: class names must be non-empty strings, got {bad[:_MAX_LISTED]}")
    names = [str(n).strip() for n in names]
    duplicates = sorted(n for n, c in Counter(names).items() if c > 1)
    if duplicates:
        raise ValueError(f"{source}: duplicate class names {duplicates}")
    return names


def _class_names(classes: PathOrNames) -> list[str]:
    """A class file's names, or a given list of names (checked)."""
    if isinstance(classes, (str, os.PathLike)):
        return read_yolo_classes(classes)
    return _checked_names("the class list", list(classes))


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------


def default_label_dir(image_dir: str | os.PathLike) -> str:
    """The ultralytics label folder of ``image_dir``: its last ``images`` component replaced by ``labels``.

    Example: ``ds/images/train`` -> ``ds/labels/train``.

    Raises:
        ValueError: ``image_dir`` has no ``images`` component.
    """
    parts = os.path.normpath(os.path.abspath(os.fspath(image_dir))).split(os.sep)
    if "images" not in parts:
        raise ValueError(f"Cannot derive the label folder of {image_dir}: no 'images' folder in it; pass label_dir")
    index = len(parts) - 1 - parts[::-1].index("images")
    parts[index] = "labels"
    return os.sep.join(parts)


def _scan(root: str, extensions: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of the files under ``root`` with these extensions (hidden skipped)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith(".") or not name.lower().endswith(extensions):
                continue
            path = os.path.join(folder, name)
            stat = os.stat(path)
            found[os.path.relpath(path, root).replace(os.sep, "/")] = (stat.st_size, stat.st_mtime_ns)
    return dict(sorted(found.items()))


def _label_of(image: str) -> str:
    return os.path.splitext(image)[0] + ".txt"


def _check_dirs(image_dir: str, label_dir: str) -> None:
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"YOLO image folder not found: {image_dir}")
    if not os.path.isdir(label_dir):
        raise FileNotFoundError(f"YOLO label folder not found: {label_dir} (label folder of images in {image_dir})")


def _check_pairing(images: Sequence[str], labels: Sequence[str], image_dir: str, label_dir: str) -> None:
    """Raises if two images share a label file or a label file has no image (labelImg's classes.txt aside)."""
    by_label = defaultdict(list)
    for image in images:
        by_label[_label_of(image)].append(image)
    shared = [f"{', '.join(v)} -> {k}" for k, v in by_label.items() if len(v) > 1]
    if shared:
        raise ValueError(f"Images in {image_dir} share a label file in {label_dir}: {'; '.join(shared[:_MAX_LISTED])}")
    orphans = [lb for lb in labels if lb not in by_label and lb != _LABELIMG_CLASSES]
    if orphans:
        listed = "\n  ".join(os.path.join(label_dir, lb) for lb in orphans[:_MAX_LISTED])
        raise ValueError(
            f"{len(orphans)} label file(s) in {label_dir} have no image in {image_dir} "
            f"(extensions {', '.join(IMAGE_EXTENSIONS)}):\n  {listed}{_more(len(orphans))}"
        )


def _more(count: int) -> str:
    return f"\n  ... and {count - _MAX_LISTED} more" if count > _MAX_LISTED else ""


# ---------------------------------------------------------------------------------------------------------------
# YOLO -> COCO
# ---------------------------------------------------------------------------------------------------------------


def _numbers(fields: Sequence[str]) -> list[float]:
    values = []
    for field in fields:
        try:
            value = float(field)
        except ValueError:
            raise ValueError(f"non-numeric value {field!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"non-finite value {field!r}")
        values.append(value)
    return values


def _in_unit_range(values: Sequence[float]) -> None:
    outside = [v for v in values if not -COORD_TOLERANCE <= v <= 1 + COORD_TOLERANCE]
    if outside:
        raise ValueError(f"coordinates {outside} outside [0, 1] (normalised coordinates expected)")


def parse_yolo_line(line: str, num_classes: int) -> tuple[int, tuple[float, float, float, float]]:
    """Parses one label line: ``class cx cy w h`` or a polygon ``class x1 y1 ... xn yn`` (n >= 3).

    Returns:
        ``(class index, (x0, y0, x1, y1))`` normalised, not clipped (a polygon gives its bounding box).

    Raises:
        ValueError: the problem (without the file name): wrong number of fields, a non-numeric value, a class
            outside ``0..num_classes-1``, coordinates outside [0, 1], a non-positive width/height.
    """
    fields = line.split()
    if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
        raise ValueError(
            f"{len(fields)} fields; expected 5 ('class cx cy w h') or an odd number >= 7 (polygon 'class x1 y1 ...')"
        )
    cls, *coords = _numbers(fields)
    if not cls.is_integer() or not 0 <= cls < num_classes:
        raise ValueError(f"class {fields[0]} is not an index in 0..{num_classes - 1}")
    if len(coords) == 4 and (coords[2] <= 0 or coords[3] <= 0):
        raise ValueError(f"non-positive width/height {coords[2]}, {coords[3]}")
    _in_unit_range(coords)
    if len(coords) == 4:
        cx, cy, w, h = coords
        return int(cls), (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    xs, ys = coords[0::2], coords[1::2]
    if max(xs) <= min(xs) or max(ys) <= min(ys):
        raise ValueError("polygon with zero width or height")
    return int(cls), (min(xs), min(ys), max(xs), max(ys))


def _read_label_file(path: str, num_classes: int) -> tuple[list[tuple[int, tuple]], list[str]]:
    """``([(class, normalised xyxy), ...], problems as 'file:line: problem')`` of one label file."""
    boxes, problems = [], []
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().split("\n")  # newlines are universal in text mode
    except UnicodeDecodeError as e:
        return [], [f"{path}: not a UTF-8 text file ({e})"]
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            boxes.append(parse_yolo_line(line, num_classes))
        except ValueError as e:
            problems.append(f"{path}:{number}: {e}")
    return boxes, problems


def _clip(box: tuple[float, float, float, float]) -> tuple[tuple[float, float, float, float], bool]:
    """The box clipped to [0, 1], and whether it stuck out by more than the tolerance."""
    clipped = tuple(min(max(v, 0.0), 1.0) for v in box)
    return clipped, max(abs(a - b) for a, b in zip(box, clipped)) > COORD_TOLERANCE


def _image_entry(image_dir: str, label_dir: str, image: str, label_files: dict, num_classes: int) -> dict:
    """Size and boxes of one image: ``{size: (h, w) | None, boxes, problems, clipped}``."""
    entry: dict[str, Any] = {"size": None, "boxes": [], "problems": [], "clipped": []}
    try:
        entry["size"] = read_image_size(os.path.join(image_dir, image))
    except (FileNotFoundError, ValueError) as e:
        entry["problems"].append(str(e))
    label = _label_of(image)
    if label in label_files:
        path = os.path.join(label_dir, label)
        boxes, problems = _read_label_file(path, num_classes)
        entry["problems"].extend(problems)
        for cls, box in boxes:
            box, stuck_out = _clip(box)
            entry["boxes"].append((cls, box))
            if stuck_out:
                entry["clipped"].append(path)
    return entry


def _coco_records(index: int, image: str, entry: dict, first_ann_id: int) -> tuple[dict, list[dict]]:
    height, width = entry["size"]
    record = {"id": index + 1, "file_name": image, "height": height, "width": width}
    annotations = []
    for cls, (x0, y0, x1, y1) in entry["boxes"]:
        bbox = [x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height]
        ann = {"id": first_ann_id + len(annotations), "image_id": index + 1, "category_id": cls, "bbox": bbox}
        annotations.append({**ann, "area": bbox[2] * bbox[3], "iscrowd": 0})
    return record, annotations


def _convert(
    image_dir: str, label_dir: str, names: list[str], images: Sequence[str], labels: dict, num_workers: int | None
) -> dict:
    if not images:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in {image_dir}")
    _check_pairing(images, list(labels), image_dir, label_dir)
    workers = num_workers or min(32, (os.cpu_count() or 1) + 4)
    read = functools.partial(_image_entry, image_dir, label_dir, label_files=labels, num_classes=len(names))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        entries = list(pool.map(read, images))
    problems = [p for e in entries for p in e["problems"]]
    if problems:
        listed = "\n  ".join(problems[:_MAX_LISTED]) + _more(len(problems))
        raise ValueError(f"{len(problems)} problem(s) in the YOLO dataset {image_dir} ({label_dir}):\n  {listed}")
    clipped = [p for e in entries for p in e["clipped"]]
    if clipped:
        logger.warning(f"Clipped {len(clipped)} box(es) sticking out of their image, in {sorted(set(clipped))[:5]}")
    coco_images, annotations = [], []
    for index, (image, entry) in enumerate(zip(images, entries)):
        record, anns = _coco_records(index, image, entry, len(annotations) + 1)
        coco_images.append(record)
        annotations.extend(anns)
    categories = [{"id": k, "name": name} for k, name in enumerate(names)]
    info = {"description": f"Converted from the YOLO dataset {image_dir} (labels {label_dir})"}
    return {"info": info, "images": coco_images, "annotations": annotations, "categories": categories}


def yolo_to_coco_dict(
    image_dir: str | os.PathLike,
    label_dir: str | os.PathLike | None = None,
    *,
    class_names: PathOrNames,
    num_workers: int | None = None,
) -> dict:
    """Converts a YOLO detection (or segmentation) dataset to a COCO instances dict.

    Args:
        image_dir: folder of the images (searched recursively; see :data:`data.mapper.IMAGE_EXTENSIONS`).
        label_dir: folder of the label files; default :func:`default_label_dir` of ``image_dir``.
        class_names: the class names, or the path of a class file (see :func:`read_yolo_classes`).
        num_workers: threads reading image headers and label files (default ``min(32, cpus + 4)``).

    Returns:
        ``{"info", "images": [{id (1..N, sorted by path), file_name (relative to image_dir), height, width}],
        "annotations": [{id, image_id, category_id (= YOLO class index), bbox [x, y, w, h] absolute pixels,
        area, iscrowd: 0}], "categories": [{id: k, name}]}``. Image sizes are read from the headers (EXIF
        orientation applied, as the loader decodes them).

    Raises:
        FileNotFoundError: a folder or the class file does not exist.
        ValueError: label files without images, images sharing a label file, unreadable images, or malformed
            lines (all of them in one message, each as ``file:line: problem``).
    """
    image_dir = os.path.abspath(os.fspath(image_dir))
    label_dir = os.path.abspath(os.fspath(label_dir)) if label_dir is not None else default_label_dir(image_dir)
    names = _class_names(class_names)
    _check_dirs(image_dir, label_dir)
    images = list(_scan(image_dir, IMAGE_EXTENSIONS))
    return _convert(image_dir, label_dir, names, images, _scan(label_dir, (".txt",)), num_workers)


# ---------------------------------------------------------------------------------------------------------------
# COCO -> YOLO
# ---------------------------------------------------------------------------------------------------------------


def _yolo_line(ann: dict, image: dict, cls: int) -> str | None:
    """``"cls cx cy w h"`` of a COCO annotation, clipped to its image; None when nothing of it is inside."""
    width, height = float(image["width"]), float(image["height"])
    x, y, w, h = (float(v) for v in ann["bbox"])
    x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    if x1 <= x0 or y1 <= y0:
        return None
    values = ((x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height)
    return f"{cls} " + " ".join(f"{v:.10g}" for v in values)


def _label_path(label_dir: str, file_name: str) -> str:
    relative = os.path.basename(file_name) if os.path.isabs(file_name) else file_name
    return os.path.join(label_dir, _label_of(os.path.normpath(relative)))


def _yolo_lines(coco_dict: dict, class_index: dict) -> tuple[dict[Any, list[str]], int, int]:
    """Label lines per image id, and the counts of skipped crowd and empty (outside the image) boxes."""
    images = {img["id"]: img for img in coco_dict["images"]}
    lines: dict[Any, list[str]] = {image_id: [] for image_id in images}
    crowd = empty = 0
    for ann in coco_dict["annotations"]:
        if ann.get("image_id") not in images or ann.get("category_id") not in class_index:
            raise ValueError(
                f"Annotation id {ann.get('id')} refers to image_id {ann.get('image_id')!r} and category_id "
                f"{ann.get('category_id')!r}; one of them is not in the dict's images / categories"
            )
        if ann.get("iscrowd", 0):
            crowd += 1
            continue
        line = _yolo_line(ann, images[ann["image_id"]], class_index[ann["category_id"]])
        if line is None:
            empty += 1
        else:
            lines[ann["image_id"]].append(line)
    return lines, crowd, empty


def coco_dict_to_yolo(coco_dict: dict, label_dir: str | os.PathLike) -> list[str]:
    """Writes YOLO label files for a COCO instances dict.

    Class ``k`` is the ``k``-th category in sorted id order (the contiguous label of :mod:`data.coco`), so a
    dict made by :func:`yolo_to_coco_dict` gets its class indices back. Every image gets a label file at its
    ``file_name`` with a ``.txt`` extension under ``label_dir`` (sub-folders kept; an absolute ``file_name`` uses
    its base name), empty for an image without objects. Boxes are clipped to the image; crowd annotations and
    boxes entirely outside their image are skipped (their counts are logged). Other files in ``label_dir`` are
    left alone.

    Args:
        coco_dict: ``{"images": [{id, file_name, height, width}], "annotations": [{image_id, category_id,
            bbox [x, y, w, h] absolute, iscrowd?}], "categories": [{id, name}]}``.
        label_dir: output folder (created if needed).

    Returns:
        the class names, index ``k`` at position ``k``.

    Raises:
        ValueError: two images map to the same label file, or an annotation's image or category is unknown.
    """
    label_dir = os.fspath(label_dir)
    meta = category_metadata(coco_dict["categories"], "the COCO dict")
    lines, crowd, empty = _yolo_lines(coco_dict, meta["thing_dataset_id_to_contiguous_id"])
    paths = {img["id"]: _label_path(label_dir, img["file_name"]) for img in coco_dict["images"]}
    shared = [p for p, n in Counter(paths.values()).items() if n > 1]
    if shared:
        raise ValueError(f"Several images would share the label file(s) {shared[:_MAX_LISTED]}")
    for image_id, path in paths.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("".join(f"{line}\n" for line in lines[image_id]))
    if crowd or empty:
        logger.info(f"Skipped {crowd} crowd annotation(s) and {empty} box(es) outside their image")
    logger.info(f"Wrote {len(paths)} YOLO label file(s) to {label_dir}")
    return meta["thing_classes"]


# ---------------------------------------------------------------------------------------------------------------
# Cached conversion and registration
# ---------------------------------------------------------------------------------------------------------------


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _cache_dir(label_dir: str, cache_dir: str | os.PathLike | None) -> str:
    if cache_dir is not None:
        return os.fspath(cache_dir)
    parent = os.path.dirname(label_dir)
    if os.access(parent, os.W_OK):
        return parent
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "detr", "yolo")


_KEY_FIELD = "yolo_cache_key"


def _cached_key(path: str) -> str | None:
    """The cache key written at the start of a cache file (None: no such file, or not ours)."""
    try:
        with open(path) as f:
            head = f.read(200)
    except OSError:
        return None
    prefix = f'{{"info": {{"{_KEY_FIELD}": "'
    return head[len(prefix) :].split('"', 1)[0] if head.startswith(prefix) else None


def yolo_coco_json(
    image_dir: str | os.PathLike,
    classes: PathOrNames,
    label_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int | None = None,
) -> str:
    """The COCO json of a YOLO dataset, converted now unless the cache file is up to date.

    The cache file is ``<cache_dir>/<label folder name>.yolo2coco-<hash of the folders and class file>.json``; it
    starts with ``{"info": {"yolo_cache_key": ...`` (a hash of the class names and every image's and label file's
    relative path, size and modification time), and is converted again, atomically, when that key changes.

    Args:
        image_dir, label_dir, num_workers: as for :func:`yolo_to_coco_dict`.
        classes: the path of a class file or the class names.
        cache_dir: folder of the cache file; default the parent of ``label_dir`` where writable, else
            ``$XDG_CACHE_HOME/detr/yolo`` (``~/.cache/detr/yolo``).

    Returns:
        the path of the cache file.
    """
    image_dir = os.path.abspath(os.fspath(image_dir))
    label_dir = os.path.abspath(os.fspath(label_dir)) if label_dir is not None else default_label_dir(image_dir)
    names = _class_names(classes)
    _check_dirs(image_dir, label_dir)
    images, labels = _scan(image_dir, IMAGE_EXTENSIONS), _scan(label_dir, (".txt",))
    source = os.path.abspath(os.fspath(classes)) if isinstance(classes, (str, os.PathLike)) else names
    name = f"{os.path.basename(label_dir)}.yolo2coco-{_hash([image_dir, label_dir, source])[:8]}.json"
    path = os.path.join(_cache_dir(label_dir, cache_dir), name)
    key = _hash([_CACHE_VERSION, names, list(images.items()), list(labels.items())])[:32]
    if _cached_key(path) == key:
        return path
    logger.info(f"Converting the YOLO dataset {image_dir} ({len(images)} images) to COCO json {path}")
    coco_dict = _convert(image_dir, label_dir, names, list(images), labels, num_workers)
    write_json({"info": {_KEY_FIELD: key, **coco_dict.pop("info")}, **coco_dict}, path)
    return path


def _load_yolo(name: str, image_dir: str, classes: PathOrNames, label_dir: str | None, cache_dir: str | None):
    json_file = yolo_coco_json(image_dir, classes, label_dir, cache_dir)
    return load_coco_json(json_file, image_dir, name)


def _json_file_metadata(image_dir: str, classes: PathOrNames, label_dir: str, cache_dir: str | None) -> dict:
    return {"json_file": yolo_coco_json(image_dir, classes, label_dir, cache_dir)}


def _category_metadata(classes: PathOrNames) -> dict[str, Any]:
    names = _class_names(classes)
    return {"thing_classes": names, "thing_dataset_id_to_contiguous_id": {k: k for k in range(len(names))}}


def register_yolo_instances(
    name: str,
    metadata: dict,
    image_dir: str | os.PathLike,
    classes: PathOrNames,
    label_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> None:
    """Registers a YOLO dataset under ``name``; nothing is read until the dataset or its metadata is used.

    Loading converts the dataset to a cached COCO json (:func:`yolo_coco_json`) and loads it with
    :func:`data.coco.load_coco_json`. Metadata: ``image_root``, ``evaluator_type="coco"``, ``yolo_label_dir``
    now; ``thing_classes`` (the class file's names, in order) and ``thing_dataset_id_to_contiguous_id``
    (``{k: k}``) from the class file on first access; ``json_file`` (the cache file) on first access.

    Args:
        name: dataset name, e.g. ``"my_yolo_train"``.
        metadata: extra metadata; class names given here must agree with the class file.
        image_dir: folder of the images.
        classes: ``data.yaml`` / ``classes.txt`` path (see :func:`read_yolo_classes`) or the class names.
        label_dir: folder of the labels; default :func:`default_label_dir` of ``image_dir``.
        cache_dir: folder of the converted json (see :func:`yolo_coco_json`).
    """
    image_dir = os.path.abspath(os.fspath(image_dir))
    label_dir = os.path.abspath(os.fspath(label_dir)) if label_dir is not None else default_label_dir(image_dir)
    cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
    classes = os.fspath(classes) if isinstance(classes, os.PathLike) else classes
    DatasetCatalog.register(name, functools.partial(_load_yolo, name, image_dir, classes, label_dir, cache_dir))
    meta = MetadataCatalog.get(name).set(
        image_root=image_dir, evaluator_type="coco", yolo_label_dir=label_dir, **metadata
    )
    meta.set_provider(CATEGORY_KEYS, functools.partial(_category_metadata, classes))
    meta.set_provider(("json_file",), functools.partial(_json_file_metadata, image_dir, classes, label_dir, cache_dir))
