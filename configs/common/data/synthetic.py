"""The embedded synthetic inspection dataset (256-384 px images): ``coco_detr`` with its sizes scaled down.

Train: short edges 224-352 (max 512); the crop variant resizes to 256-320, crops 192-288, then resizes as
above. Test: short edge 320 (max 512). The data is generated on first use (see data/synthetic.py).
"""

from .coco_detr import dataloader

_train_sizes = list(range(224, 353, 32))
_plain, _with_crop = dataloader.train.mapper.augmentation, dataloader.train.mapper.augmentation_with_crop

dataloader.train.dataset.names = "synthetic_train"
_plain[1].short_edge_length = _train_sizes
_plain[1].max_size = 512
_with_crop[1].short_edge_length = [256, 288, 320]
_with_crop[2].crop_size = [192, 288]
_with_crop[3].short_edge_length = _train_sizes
_with_crop[3].max_size = 512
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 2

dataloader.test.dataset.names = "synthetic_val"
dataloader.test.mapper.augmentation[0].short_edge_length = 320
dataloader.test.mapper.augmentation[0].max_size = 512
dataloader.test.num_workers = 2
