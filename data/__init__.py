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
from .mapper import DetrDatasetMapper, read_image, read_image_size
from .samplers import InferenceSampler, InfiniteGroupedBatchSampler
from .synthetic import ensure_synthetic_dataset, generate_synthetic_coco, register_synthetic
from .transforms import Crop, RandomChoice, RandomCrop, RandomFlip, ResizeShortestEdge, build_augmentation
from .yolo import coco_dict_to_yolo, read_yolo_classes, register_yolo_instances, yolo_to_coco_dict

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
    "read_image_size",
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
    "coco_dict_to_yolo",
    "read_yolo_classes",
    "register_yolo_instances",
    "yolo_to_coco_dict",
]
