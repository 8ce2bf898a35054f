"""COCO 2017 detection data for DETR-style training (detrex's ``coco_detr``): flip, multi-scale resize,
and with probability 0.5 a resize + random crop before the multi-scale resize."""

from omegaconf import OmegaConf

from core.lazy import LazyCall as L
from data import (
    DetrDatasetMapper,
    RandomCrop,
    RandomFlip,
    ResizeShortestEdge,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from evaluation import COCOEvaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train", check_images=True),
    mapper=L(DetrDatasetMapper)(
        augmentation=[
            L(RandomFlip)(),
            L(ResizeShortestEdge)(
                short_edge_length=list(range(480, 801, 32)),
                max_size=1333,
                sample_style="choice",
            ),
        ],
        augmentation_with_crop=[
            L(RandomFlip)(),
            L(ResizeShortestEdge)(short_edge_length=[400, 500, 600], sample_style="choice"),
            L(RandomCrop)(crop_type="absolute_range", crop_size=[384, 600]),
            L(ResizeShortestEdge)(
                short_edge_length=list(range(480, 801, 32)),
                max_size=1333,
                sample_style="choice",
            ),
        ],
        is_train=True,
    ),
    total_batch_size=16,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_val", filter_empty=False, check_images=True),
    mapper=L(DetrDatasetMapper)(
        augmentation=[L(ResizeShortestEdge)(short_edge_length=800, max_size=1333)],
        is_train=False,
    ),
    num_workers=4,
)

dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}")

# Your own COCO-format data without writing Python: set a split's json_file and image_root (on the command line,
# e.g. dataloader.datasets.train.json_file=my_data/train.json). tools/train_net.py and the scripts register it
# under `name` before anything is built and point dataloader.train / dataloader.test (and the evaluator) at it;
# config.yaml keeps these keys, so a saved run reloads with its data (engine/data_setup.py).
dataloader.datasets = dict(
    train=dict(name="custom_train", json_file=None, image_root=None),
    test=dict(name="custom_val", json_file=None, image_root=None),
)
