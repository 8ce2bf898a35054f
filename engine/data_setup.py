"""Datasets named in a config, registered before anything is built, and the model's classes checked against them.

A config can name its data by file instead of by a registered name, so that training on one's own data needs no
Python and the saved ``config.yaml`` reproduces the run::

    dataloader.datasets.train.json_file=my_data/train.json dataloader.datasets.train.image_root=my_data/train
    dataloader.datasets.test.json_file=my_data/val.json dataloader.datasets.test.image_root=my_data/val

:func:`setup_datasets` (called by ``default_setup`` and by every script that takes ``--config-file``) registers
each such split under ``dataloader.datasets.<split>.name``, points ``dataloader.<split>.dataset.names`` (and the
evaluator) at it, and completes or checks ``model.num_classes`` against the datasets' classes: ``null`` takes the
number from the data, a number that disagrees is an error naming the key and both numbers.
"""

from __future__ import annotations

import logging
import os

from omegaconf import DictConfig, OmegaConf

from data import DatasetCatalog, MetadataCatalog, register_coco_instances

__all__ = [
    "SPLITS",
    "dataset_categories",
    "dataset_classes",
    "dataset_names",
    "register_config_datasets",
    "resolve_num_classes",
    "setup_datasets",
]

logger = logging.getLogger(__name__)

#: the loaders of ``cfg.dataloader`` whose data ``dataloader.datasets`` can name
SPLITS = ("train", "test")

# name -> (json_file, image_root) of the datasets this module registered; a config may re-register those
_REGISTERED_FROM_CONFIG: dict[str, tuple[str, str]] = {}


def setup_datasets(cfg: DictConfig, splits: tuple[str, ...] = SPLITS) -> None:
    """Registers the config's own datasets, then completes or checks ``model.num_classes``.

    Args:
        cfg: a LazyConfig with ``dataloader`` (configs without one are left alone).
        splits: the loaders whose datasets matter (``("test",)`` for evaluation only).
    """
    register_config_datasets(cfg)
    resolve_num_classes(cfg, splits)


def register_config_datasets(cfg: DictConfig) -> list[str]:
    """Registers each split of ``dataloader.datasets`` that names files, and points the loaders at it.

    Relative paths are made absolute in ``cfg``, so a saved config works from any folder.

    Returns:
        the names registered (or found registered with the same files).

    Raises:
        ValueError: a split names only one of ``json_file`` / ``image_root``, or a name that is registered
            otherwise (a built-in dataset, or one registered in Python).
        FileNotFoundError: a named file or folder does not exist.
    """
    specs = OmegaConf.select(cfg, "dataloader.datasets", default=None)
    if specs is None:
        return []
    names = []
    for split in SPLITS:
        spec = specs.get(split)
        if spec is None or (spec.get("json_file") is None and spec.get("image_root") is None):
            continue
        key = f"dataloader.datasets.{split}"
        json_file, image_root = _checked_paths(spec, key)
        spec.json_file, spec.image_root = json_file, image_root
        _register(spec.name, json_file, image_root, key)
        _point_loader_at(cfg, split, spec.name)
        names.append(spec.name)
    return names


def _checked_paths(spec: DictConfig, key: str) -> tuple[str, str]:
    missing = [k for k in ("json_file", "image_root") if spec.get(k) is None]
    if missing:
        given = "image_root" if missing[0] == "json_file" else "json_file"
        raise ValueError(f"{key}.{given} is set but {key}.{missing[0]} is not: a split needs both")
    if not spec.get("name"):
        raise ValueError(f"{key}.name is empty: give the dataset a name")
    json_file, image_root = os.path.abspath(str(spec.json_file)), os.path.abspath(str(spec.image_root))
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"{key}.json_file={spec.json_file}: no such file")
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"{key}.image_root={spec.image_root}: no such folder")
    return json_file, image_root


def _register(name: str, json_file: str, image_root: str, key: str) -> None:
    files = (json_file, image_root)
    if name in DatasetCatalog:
        if _REGISTERED_FROM_CONFIG.get(name) == files:
            return
        if name not in _REGISTERED_FROM_CONFIG:
            raise ValueError(
                f"{key}.name={name!r} is already a registered dataset (built in, or registered in Python); "
                f"set {key}.name to another name"
            )
        DatasetCatalog.remove(name)  # an earlier config's files under the same name: the config is the truth
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, json_file, image_root)
    _REGISTERED_FROM_CONFIG[name] = files
    logger.info(f"Registered dataset '{name}' from {key}: {json_file} (images in {image_root})")


def _point_loader_at(cfg: DictConfig, split: str, name: str) -> None:
    """Sets ``dataloader.<split>.dataset.names`` (and the evaluator's dataset for ``test``) to ``name``."""
    dataset = OmegaConf.select(cfg, f"dataloader.{split}.dataset", default=None)
    if not isinstance(dataset, DictConfig) or "names" not in dataset:
        raise ValueError(
            f"dataloader.datasets.{split} names files, but dataloader.{split}.dataset has no 'names' to point at "
            "them (expected LazyCall(get_detection_dataset_dicts)(names=...))"
        )
    if dataset.names != name:
        logger.info(f"dataloader.{split}.dataset.names: {dataset.names!r} -> {name!r}")
        dataset.names = name
    evaluator = OmegaConf.select(cfg, "dataloader.evaluator", default=None)
    if split == "test" and isinstance(evaluator, DictConfig) and "dataset_name" in evaluator:
        raw = evaluator._get_node("dataset_name")._value()
        if not (isinstance(raw, str) and raw.startswith("${")):  # an interpolation follows the loader by itself
            evaluator.dataset_name = name


def dataset_names(cfg: DictConfig, split: str) -> list[str]:
    """The dataset names of ``dataloader.<split>.dataset.names`` (``[]`` when the config has none)."""
    names = OmegaConf.select(cfg, f"dataloader.{split}.dataset.names", default=None)
    if names is None:
        return []
    return [names] if isinstance(names, str) else [str(n) for n in names]


def dataset_classes(name: str) -> list[str] | None:
    """The class names of a registered dataset (read from its json when needed), or None if it has none."""
    classes = MetadataCatalog.get(name).get("thing_classes")
    return None if classes is None else [str(c) for c in classes]


def dataset_categories(cfg: DictConfig, split: str) -> dict:
    """``{"thing_classes", "thing_dataset_id_to_contiguous_id"}`` of the first dataset of ``split`` as plain data.

    ``{}`` when the config has no dataset there or it has no class names. ``tools/train_net.py`` stores this in
    every checkpoint; the predictor reads it back.
    """
    names = dataset_names(cfg, split)
    if not names:
        return {}
    meta = MetadataCatalog.get(names[0])
    classes = meta.get("thing_classes")
    if classes is None:
        return {}
    return {
        "thing_classes": [str(c) for c in classes],
        "thing_dataset_id_to_contiguous_id": dict(meta.get("thing_dataset_id_to_contiguous_id") or {}),
    }


def _describe(name: str) -> str:
    json_file = MetadataCatalog.get(name).get("json_file")
    return f"'{name}' ({json_file})" if json_file else f"'{name}'"


def _classes_of_splits(cfg: DictConfig, splits: tuple[str, ...]) -> tuple[str, list[str]] | None:
    """``(dataset, class names)`` shared by every dataset of ``splits``; None when no dataset has class names.

    Raises:
        ValueError: two datasets have different classes (a model cannot be evaluated on another label set).
    """
    first: tuple[str, list[str]] | None = None
    for split in splits:
        for name in dataset_names(cfg, split):
            classes = dataset_classes(name)
            if classes is None:
                continue
            if first is None:
                first = (name, classes)
            elif classes != first[1]:
                raise ValueError(
                    f"Datasets {_describe(first[0])} and {_describe(name)} have different classes: {first[1]} vs "
                    f"{classes}. The train and test data must share their categories (same ids and names)."
                )
    return first


def resolve_num_classes(cfg: DictConfig, splits: tuple[str, ...] = SPLITS) -> int | None:
    """Sets ``model.num_classes`` from the data when it is null; checks it against the data otherwise.

    Returns:
        the number of classes of the datasets (None when they have no class names or the model no num_classes).

    Raises:
        ValueError: ``model.num_classes`` disagrees with the datasets, or is null while no dataset has classes.
    """
    model = cfg.get("model")
    if not isinstance(model, DictConfig) or "num_classes" not in model:
        return None
    found = _classes_of_splits(cfg, splits)
    value = model.num_classes
    if found is None:
        if value is None:
            raise ValueError(
                "model.num_classes is null, but no dataset of the config has class names to take it from; "
                "set model.num_classes"
            )
        return None
    name, classes = found
    shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
    if value is None:
        model.num_classes = len(classes)
        logger.info(f"model.num_classes = {len(classes)}, from dataset {_describe(name)}: {shown}")
    elif int(value) != len(classes):
        raise ValueError(
            f"model.num_classes={value}, but dataset {_describe(name)} has {len(classes)} classes ({shown}). "
            f"Set model.num_classes={len(classes)}, or model.num_classes=null to take it from the dataset."
        )
    return len(classes)
