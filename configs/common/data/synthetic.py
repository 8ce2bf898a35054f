"""The embedded synthetic inspection dataset (256-384 px images), with ``coco_detr``'s augmentations
scaled to its image size: short edges 224-352 (max 512), crop variant resize 256-320 then crop 192-288,
test short edge 320 (max 512). The data is generated on first use (see data/synthetic.py)."""

from omegaconf import OmegaConf

from data import (
    DetrDatasetMapper,
    RandomCrop,
    RandomFlip,
    ResizeShortestEdge,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from engine.lazy import LazyCall as L
from evaluation import COCOEvaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synthetic_train"),
    mapper=L(DetrDatasetMapper)(
        augmentation=[
            L(RandomFlip)(),
            L(ResizeShortestEdge)(
                short_edge_length=list(range(224, 353, 32)),
                max_size=512,
                sample_style="choice",
            ),
        ],
        augmentation_with_crop=[
            L(RandomFlip)(),
            L(ResizeShortestEdge)(short_edge_length=[256, 288, 320], sample_style="choice"),
            L(RandomCrop)(crop_type="absolute_range", crop_size=[192, 288]),
            L(ResizeShortestEdge)(
                short_edge_length=list(range(224, 353, 32)),
                max_size=512,
                sample_style="choice",
            ),
        ],
        is_train=True,
    ),
    total_batch_size=4,
    num_workers=2,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synthetic_val", filter_empty=False),
    mapper=L(DetrDatasetMapper)(
        augmentation=[L(ResizeShortestEdge)(short_edge_length=320, max_size=512)],
        is_train=False,
    ),
    num_workers=2,
)

dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}")
