"""Datasets, their registration, mappers and loaders."""

from . import builtin  # noqa: F401  (registers the built-in datasets)
from .build import (
    MapDataset,
    TrainLoader,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
    trivial_batch_collator,
)
from .catalog import DatasetCatalog, Metadata, MetadataCatalog
from .coco import convert_to_coco_dict, convert_to_coco_json, load_coco_json, register_coco_instances
from .mapper import DetrDatasetMapper, read_image
from .samplers import InferenceSampler, InfiniteGroupedBatchSampler
from .synthetic import ensure_synthetic_dataset, generate_synthetic_coco, register_synthetic
from .transforms import Crop, RandomChoice, RandomCrop, RandomFlip, ResizeShortestEdge, build_augmentation

__all__ = [
    "DatasetCatalog",
    "Metadata",
    "MetadataCatalog",
    "MapDataset",
    "TrainLoader",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "get_detection_dataset_dicts",
    "trivial_batch_collator",
    "convert_to_coco_dict",
    "convert_to_coco_json",
    "load_coco_json",
    "register_coco_instances",
    "DetrDatasetMapper",
    "read_image",
    "InferenceSampler",
    "InfiniteGroupedBatchSampler",
    "ensure_synthetic_dataset",
    "generate_synthetic_coco",
    "register_synthetic",
    "Crop",
    "RandomChoice",
    "RandomCrop",
    "RandomFlip",
    "ResizeShortestEdge",
    "build_augmentation",
]
