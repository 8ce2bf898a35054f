"""The project's embedded default dataset: synthetic industrial-inspection images in COCO format.

Each image is a textured grey surface (smooth noise, gradients, stripes, sensor noise), stored as an 8-bit
greyscale PNG like a monochrome inspection camera's (the mapper reads it as RGB), with 0-8 objects of
four classes whose COCO ids are deliberately non-contiguous:

====  ========  ======================================================  ===========================
 id    name      looks like                                              typical COCO size
====  ========  ======================================================  ===========================
 1     spot      faint round blob, a few grey levels off the surface     small
 3     scratch   thin (1-2.5 px) faint line, 12-120 px long              small / medium
 5     ring      washer: bright or dark annulus                          small / medium / large
 7     plate     rotated rectangle with a shading gradient               small / medium / large
====  ========  ======================================================  ===========================

Every box is the tight bounding box of the pixels the object changed (anti-aliased coverage >= 1/4), so
boxes are exact integers. Annotation ``area`` is the box area ``w * h`` (there are no masks). Images are
256-384 px per side, landscape and portrait mixed. Generation is deterministic: each image draws from
``numpy.random.default_rng([seed, split, index])``, and PNG bytes depend only on the pixels.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence

import numpy as np
from PIL import Image

from .catalog import DatasetCatalog, MetadataCatalog
from .coco import load_coco_json

__all__ = [
    "CATEGORIES",
    "THING_CLASSES",
    "dataset_summary",
    "default_synthetic_root",
    "ensure_synthetic_dataset",
    "generate_custom_coco",
    "generate_synthetic_coco",
    "register_synthetic",
    "render_image",
]

logger = logging.getLogger(__name__)

CATEGORIES = (
    {"id": 1, "name": "spot", "supercategory": "defect"},
    {"id": 3, "name": "scratch", "supercategory": "defect"},
    {"id": 5, "name": "ring", "supercategory": "part"},
    {"id": 7, "name": "plate", "supercategory": "part"},
)
THING_CLASSES = [c["name"] for c in CATEGORIES]
THING_ID_MAP = {c["id"]: i for i, c in enumerate(CATEGORIES)}
_CLASS_PROBS = (0.3, 0.25, 0.2, 0.25)
_SPLITS = ("train", "val")
_SIDE_RANGE = (256, 384)
_MAX_OBJECTS = 8
_EMPTY_PROB = 0.06
_MIN_COVERAGE = 0.25


def default_synthetic_root() -> str:
    """``$DETR_DATASETS/synthetic``, with ``DETR_DATASETS`` defaulting to ``<repo root>/datasets``."""
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(os.environ.get("DETR_DATASETS", os.path.join(repo_root, "datasets")), "synthetic")


# ---------------------------------------------------------------------------------------------------------------
# Drawing: every shape is a signed distance (negative inside) evaluated at pixel centres of a window.
# ---------------------------------------------------------------------------------------------------------------


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Textured surface, float32 [h, w]: base level plus some of smooth noise, a gradient and stripes."""
    img = np.full((h, w), rng.uniform(60, 190), dtype=np.float32)
    ys, xs = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    use = rng.random(3) < 0.6
    if not use.any():
        use[rng.integers(3)] = True
    if use[0]:  # smooth noise: a coarse random grid, upsampled
        cell = int(rng.integers(24, 97))
        grid = rng.normal(size=(h // cell + 2, w // cell + 2)).astype(np.float32)
        smooth = np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.Resampling.BICUBIC))
        img += smooth * rng.uniform(4, 14)
    if use[1] or use[2]:
        theta = rng.uniform(0, np.pi)
        along = xs * np.float32(np.cos(theta)) + ys * np.float32(np.sin(theta))
        if use[1]:  # gradient
            img += (along / max(h, w) - 0.5) * rng.uniform(10, 40)
        if use[2]:  # stripes (machining marks)
            phase = np.sin(along * np.float32(2 * np.pi / rng.uniform(6, 40)) + np.float32(rng.uniform(0, 2 * np.pi)))
            img += phase * rng.uniform(2, 7)
    return img


def _window(cx: float, cy: float, radius: float, h: int, w: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Integer window around a centre and its pixel-centre coordinates ``(x0, y0, xs [1, W'], ys [H', 1])``."""
    x0, y0 = max(0, int(np.floor(cx - radius - 2))), max(0, int(np.floor(cy - radius - 2)))
    x1, y1 = min(w, int(np.ceil(cx + radius + 2))), min(h, int(np.ceil(cy + radius + 2)))
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    return x0, y0, xs, ys


def _coverage(signed_distance: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] from a signed distance; faint fringes (< 1/4) are cut to 0."""
    cov = np.clip(0.5 - signed_distance, 0.0, 1.0)
    cov[cov < _MIN_COVERAGE] = 0.0
    return cov


def _contrast(rng: np.random.Generator, low: float, high: float) -> float:
    """Signed grey-level change: brighter or darker than the surface by [low, high]."""
    return float(rng.choice([-1, 1]) * rng.uniform(low, high))


def _spot(rng, cx, cy, xs, ys):
    r = rng.uniform(2.0, 7.5)
    dist = np.hypot(xs - cx, ys - cy)
    dome = 1.0 - 0.4 * np.clip(dist / r, 0, 1) ** 2
    return _coverage(dist - r) * dome * _contrast(rng, 10, 25)


def _scratch(rng, cx, cy, xs, ys, half_length, theta):
    dx, dy = np.cos(theta) * half_length, np.sin(theta) * half_length
    px, py = xs - (cx - dx), ys - (cy - dy)
    t = np.clip((px * 2 * dx + py * 2 * dy) / (4 * half_length**2), 0.0, 1.0)
    dist = np.hypot(px - t * 2 * dx, py - t * 2 * dy)
    return _coverage(dist - rng.uniform(1.0, 2.5) / 2) * _contrast(rng, 14, 35)


def _ring(rng, cx, cy, xs, ys, r_out):
    r_in = r_out * rng.uniform(0.35, 0.7)
    dist = np.hypot(xs - cx, ys - cy)
    return _coverage(np.maximum(dist - r_out, r_in - dist)) * _contrast(rng, 35, 80)


def _plate(rng, cx, cy, xs, ys, half_w, half_h, theta):
    c, s = np.cos(theta), np.sin(theta)
    u, v = (xs - cx) * c + (ys - cy) * s, -(xs - cx) * s + (ys - cy) * c
    shading = 1.0 + 0.25 * u / half_w
    return _coverage(np.maximum(np.abs(u) - half_w, np.abs(v) - half_h)) * shading * _contrast(rng, 25, 70)


def _object_shape(rng: np.random.Generator, label: int):
    """Samples a shape of class ``label``: returns ``(radius of its extent, drawing function)``."""
    if label == 0:
        return 8.0, _spot
    if label == 1:
        half_length, theta = np.exp(rng.uniform(np.log(6), np.log(60))), rng.uniform(0, np.pi)
        return half_length + 2, functools.partial(_scratch, half_length=half_length, theta=theta)
    if label == 2:
        r_out = float(np.exp(rng.uniform(np.log(7), np.log(75))))
        return r_out, functools.partial(_ring, r_out=r_out)
    half_w, half_h = np.exp(rng.uniform(np.log(7), np.log(80), size=2))
    theta = rng.uniform(-np.pi / 6, np.pi / 6)
    return float(np.hypot(half_w, half_h)), functools.partial(_plate, half_w=half_w, half_h=half_h, theta=theta)


def _iou(a: tuple, b: tuple) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _place(rng, radius: float, h: int, w: int, taken: list[tuple]) -> tuple[float, float] | None:
    """A centre keeping the extent inside the image and overlapping placed objects little (None: no room)."""
    radius = min(radius, (min(h, w) - 4) / 2)
    for _ in range(10):
        cx, cy = rng.uniform(radius + 1, w - radius - 1), rng.uniform(radius + 1, h - radius - 1)
        extent = (cx - radius, cy - radius, cx + radius, cy + radius)
        if all(_iou(extent, t) < 0.2 for t in taken):
            taken.append(extent)
            return cx, cy
    return None


def _draw_object(rng, img: np.ndarray, label: int, taken: list[tuple]) -> dict | None:
    """Adds one object of class ``label`` to ``img`` in place; returns ``{bbox, label}`` or None."""
    h, w = img.shape
    radius, draw = _object_shape(rng, label)
    centre = _place(rng, radius, h, w, taken)
    if centre is None:
        return None
    x0, y0, xs, ys = _window(*centre, radius, h, w)
    patch = draw(rng, *centre, xs, ys).astype(np.float32)
    rows, cols = np.nonzero(patch)
    if rows.size == 0:
        return None
    img[y0 : y0 + patch.shape[0], x0 : x0 + patch.shape[1]] += patch
    x, y = int(x0 + cols.min()), int(y0 + rows.min())
    bbox = [x, y, int(x0 + cols.max()) + 1 - x, int(y0 + rows.max()) + 1 - y]
    return {"bbox": bbox, "label": label}


def render_image(rng: np.random.Generator, side_range: tuple[int, int] = _SIDE_RANGE) -> tuple[np.ndarray, list[dict]]:
    """Draws one synthetic image with sides in ``side_range`` (inclusive).

    Returns:
        ``(grey image uint8 [H, W], objects)`` with objects ``[{"bbox": [x, y, w, h] ints, "label": 0..3}]``.
    """
    h, w = (int(v) for v in rng.integers(side_range[0], side_range[1] + 1, size=2))
    img = _background(rng, h, w)
    num = 0 if rng.random() < _EMPTY_PROB else int(rng.integers(1, _MAX_OBJECTS + 1))
    labels = sorted(rng.choice(len(CATEGORIES), size=num, p=_CLASS_PROBS).tolist(), key=lambda c: -c)  # big first
    taken: list[tuple] = []
    objects = [o for o in (_draw_object(rng, img, label, taken) for label in labels) if o is not None]
    img += rng.standard_normal(size=img.shape, dtype=np.float32) * np.float32(rng.uniform(1.5, 4.0))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), objects


# ---------------------------------------------------------------------------------------------------------------
# Writing, registration
# ---------------------------------------------------------------------------------------------------------------


def _write_split(root: str, split_index: int, num_images: int, seed: int) -> str:
    split = _SPLITS[split_index]
    os.makedirs(os.path.join(root, split), exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        gray, objects = render_image(np.random.default_rng([seed, split_index, i]))
        file_name = f"{i:06d}.png"
        Image.fromarray(gray).save(os.path.join(root, split, file_name), format="PNG", compress_level=1)
        images.append({"id": i + 1, "file_name": file_name, "height": gray.shape[0], "width": gray.shape[1]})
        for obj in objects:
            x, y, bw, bh = obj["bbox"]
            cat_id = CATEGORIES[obj["label"]]["id"]
            ann = {"id": len(annotations) + 1, "image_id": i + 1, "category_id": cat_id, "bbox": obj["bbox"]}
            annotations.append({**ann, "area": bw * bh, "iscrowd": 0})
    info = {
        "description": "Synthetic industrial-inspection dataset (data/synthetic.py)",
        "version": "1.0",
        "split": split,
        "seed": seed,
    }
    coco = {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": list(CATEGORIES)}
    json_file = os.path.join(root, "annotations", f"instances_{split}.json")
    os.makedirs(os.path.dirname(json_file), exist_ok=True)
    with open(json_file, "w") as f:
        json.dump(coco, f)
    return json_file


def generate_synthetic_coco(root: str, num_train: int = 400, num_val: int = 100, seed: int = 0) -> dict[str, str]:
    """Writes the synthetic dataset into ``root`` (not atomic; see :func:`ensure_synthetic_dataset`).

    Layout: ``root/{train,val}/NNNNNN.png`` and ``root/annotations/instances_{train,val}.json``.

    Args:
        root: output folder (created if needed).
        num_train, num_val: number of images per split.
        seed: the same seed gives the same json and image bytes.

    Returns:
        ``{"train": json path, "val": json path}``.
    """
    if num_train < 0 or num_val < 0:
        raise ValueError(f"Image counts must be >= 0, got num_train={num_train}, num_val={num_val}")
    counts = (num_train, num_val)
    return {split: _write_split(root, i, counts[i], seed) for i, split in enumerate(_SPLITS)}


def generate_custom_coco(
    root: str,
    categories: Sequence[tuple[int, str]] = ((1, "scratch"), (2, "dent"), (3, "stain")),
    image_format: str = "jpg",
    num_train: int = 60,
    num_val: int = 20,
    seed: int = 0,
    side_range: tuple[int, int] = (200, 320),
) -> dict[str, str]:
    """Writes a small dataset laid out like a user's own data: ``root/{train,val}.json`` + ``root/{train,val}/``.

    It differs from the built-in set on purpose, to try the own-data path: the category ids and names are the
    caller's (listed in the json in reverse order), images are colour JPEG (or PNG) of other sizes, and image ids
    are not 1..N. The shapes of the built-in set are drawn, shape ``k`` as category ``k mod len(categories)``.

    Returns:
        ``{"train": json path, "val": json path}``.
    """
    if not 1 <= len(categories) <= len(CATEGORIES):
        raise ValueError(f"between 1 and {len(CATEGORIES)} categories, got {len(categories)}")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    cats = [{"id": int(i), "name": str(n), "supercategory": "defect"} for i, n in categories]
    out = {}
    for split_index, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        os.makedirs(os.path.join(root, split), exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            rng = np.random.default_rng([seed, 100 + split_index, i])
            gray, objects = render_image(rng, side_range)
            tint = rng.uniform(0.8, 1.2, size=3).astype(np.float32)
            rgb = np.clip(gray[..., None].astype(np.float32) * tint, 0, 255).astype(np.uint8)
            image_id, file_name = 1000 + 7 * i, f"{split}_{i:05d}.{image_format}"
            Image.fromarray(rgb).save(os.path.join(root, split, file_name), quality=95)
            images.append({"id": image_id, "file_name": file_name, "height": rgb.shape[0], "width": rgb.shape[1]})
            for obj in objects:
                x, y, bw, bh = obj["bbox"]
                ann = {"id": len(annotations) + 1, "image_id": image_id, "bbox": obj["bbox"], "area": bw * bh}
                annotations.append({**ann, "category_id": cats[obj["label"] % len(cats)]["id"], "iscrowd": 0})
        coco = {"images": images, "annotations": annotations, "categories": cats[::-1]}
        out[split] = os.path.join(root, f"{split}.json")
        with open(out[split], "w") as f:
            json.dump(coco, f)
    return out


def _json_path(root: str, split: str) -> str:
    return os.path.join(root, "annotations", f"instances_{split}.json")


def _is_complete(root: str) -> bool:
    return all(os.path.isfile(_json_path(root, s)) for s in _SPLITS)


def ensure_synthetic_dataset(root: str, num_train: int = 400, num_val: int = 100, seed: int = 0) -> str:
    """Generates the dataset at ``root`` unless it is there; safe when several processes race.

    Each process generates into a temporary sibling folder and renames it to ``root``; the rename is atomic,
    so ``root`` is either absent or complete. A process that loses the race discards its copy and uses the
    winner's.

    Returns:
        ``root``.
    """
    root = os.path.abspath(root)
    if os.path.isdir(root) and os.listdir(root) and not _is_complete(root):  # renamed into place => complete
        raise FileExistsError(f"{root} exists but holds no complete synthetic dataset; remove it to regenerate")
    if _is_complete(root):
        return root
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.tmp-", dir=parent)
    try:
        logger.info(f"Generating the synthetic dataset ({num_train} train, {num_val} val images) into {root}")
        generate_synthetic_coco(tmp, num_train=num_train, num_val=num_val, seed=seed)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, root)
        except OSError:
            if not _is_complete(root):  # someone else's rename must have won
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _load_split(root: str, split: str, dataset_name: str, num_train: int, num_val: int, seed: int) -> list[dict]:
    ensure_synthetic_dataset(root, num_train=num_train, num_val=num_val, seed=seed)
    return load_coco_json(_json_path(root, split), os.path.join(root, split), dataset_name)


def register_synthetic(
    root: str | None = None, *, name_prefix: str = "synthetic", num_train: int = 400, num_val: int = 100, seed: int = 0
) -> list[str]:
    """Registers ``{name_prefix}_train`` and ``{name_prefix}_val``; the data is generated on first use.

    Metadata (``thing_classes``, ``thing_dataset_id_to_contiguous_id``, ``json_file``, ``image_root``,
    ``evaluator_type``) is set now, from the generator's constant category table.

    Args:
        root: dataset folder; None uses :func:`default_synthetic_root`.
        name_prefix: prefix of the two dataset names.
        num_train, num_val, seed: generation parameters used if the dataset must be generated.

    Returns:
        the registered names.
    """
    root = os.path.abspath(root or default_synthetic_root())
    names = []
    for split in _SPLITS:
        name = f"{name_prefix}_{split}"
        DatasetCatalog.register(name, functools.partial(_load_split, root, split, name, num_train, num_val, seed))
        MetadataCatalog.get(name).set(
            thing_classes=list(THING_CLASSES),
            thing_dataset_id_to_contiguous_id=dict(THING_ID_MAP),
            json_file=_json_path(root, split),
            image_root=os.path.join(root, split),
            evaluator_type="coco",
        )
        names.append(name)
    return names


def _size_group(area: float) -> str:
    return "small" if area < 32**2 else "medium" if area < 96**2 else "large"


def dataset_summary(json_file: str) -> dict:
    """Counts of a COCO json: ``{"images", "empty_images", "instances": {class: n}, "sizes": {small/medium/large: n}}``.

    Sizes follow COCO's area ranges applied to the annotations' ``area``.
    """
    with open(json_file) as f:
        coco = json.load(f)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    anns = coco["annotations"]
    per_class = Counter(names[a["category_id"]] for a in anns)
    sizes = Counter(_size_group(a["area"]) for a in anns)
    used = {a["image_id"] for a in anns}
    return {
        "images": len(coco["images"]),
        "empty_images": sum(img["id"] not in used for img in coco["images"]),
        "instances": {n: per_class.get(n, 0) for n in names.values()},
        "sizes": {k: sizes.get(k, 0) for k in ("small", "medium", "large")},
    }
