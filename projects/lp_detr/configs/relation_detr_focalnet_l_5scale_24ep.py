"""Relation DETR, FocalNet-L (ImageNet-22k), 5 scales, 1200 / 2000 px, COCO 2017, 24 epochs: the model of the
official ``relation_detr_focalnet_large_lrf_fl4_1200_2000`` (63.5 AP on test-dev after Objects365 pretraining).

The backbone class and architecture are those of Salience DETR's FocalNet-L
(``configs/common/backbones/focalnet_l.py``: ``focalnet_large_lrf_fl4``, 4 focal levels, stochastic depth 0.5, a
LayerNorm on each returned stage), but the official Relation DETR model uses it differently:

* all four stages are returned (strides 4, 8, 16, 32, channels 192-1536) and the neck adds a fifth level (stride 64),
  so the encoder and decoder attend to 5 levels;
* nothing in the backbone is frozen (the official ``freeze_indices=()``);
* 1000 denoising queries instead of 100;
* images are tested at short edge 1200, long edge <= 2000.

The official model was pretrained on Objects365 for 4 epochs (``relation_detr_focalnet_large_lrf_fl4_800_1333``:
the same model at 800 / 1333 with 100 denoising queries) and then fine-tuned on COCO for 24 epochs. Only the
fine-tuning stage is described here: set ``train.init_checkpoint`` to the converted Objects365 checkpoint
(``relation_detr_focalnet_large_lrf_fl4_800_1333_o365_4e.pth``; its class heads are skipped if their shapes differ).
The official repository does not say which augmentation the fine-tuning used; this config applies the DETR
augmentation scaled by 1.5 (short edges 720-1200 up to 2000, crop variant 600-900 / 576-900), which is the
geometric part of the official ``strong_album_1200_2000`` preset without its photometric (albumentations) and
vertical-flip parts. The lr drops after epoch 20, as in ``relation_detr_r50_4scale_24ep.py`` (the official
fine-tuning schedule is not published either).

The official COCO checkpoint (``relation_detr_focalnet_large_lrf_fl4_1200_2000_o365_4e-coco_2x.pth``) converts with
``scripts/convert_checkpoint.py --model relation_detr`` into this model with ``model.num_classes=91``.
"""

from core.lazy import LazyCall as L
from data import RandomCrop, RandomFlip, ResizeShortestEdge

from ....configs.common.backbones.focalnet_l import backbone
from ....configs.common.recipes.detr_coco_24ep import dataloader, lr_multiplier, optimizer, train
from .models.relation_detr_r50 import model

model.backbone = backbone
model.backbone.out_indices = (0, 1, 2, 3)
model.backbone.freeze_at = 0
model.neck.in_channels = (192, 384, 768, 1536)
model.transformer.num_feature_levels = 5
model.denoising.denoising_nums = 1000

_SCALES = [int(1.5 * s) for s in range(480, 801, 32)]  # 720, 768, ..., 1200
dataloader.train.mapper.augmentation = [
    L(RandomFlip)(),
    L(ResizeShortestEdge)(short_edge_length=_SCALES, max_size=2000, sample_style="choice"),
]
dataloader.train.mapper.augmentation_with_crop = [
    L(RandomFlip)(),
    L(ResizeShortestEdge)(short_edge_length=[600, 750, 900], sample_style="choice"),
    L(RandomCrop)(crop_type="absolute_range", crop_size=[576, 900]),
    L(ResizeShortestEdge)(short_edge_length=_SCALES, max_size=2000, sample_style="choice"),
]
dataloader.test.mapper.augmentation = [L(ResizeShortestEdge)(short_edge_length=1200, max_size=2000)]

train.output_dir = "./output/relation_detr_focalnet_l_5scale_24ep"
