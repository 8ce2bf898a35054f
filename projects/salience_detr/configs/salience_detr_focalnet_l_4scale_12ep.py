"""Salience DETR, FocalNet-L (ImageNet-22k), 4 scales, COCO 2017, 12 epochs: the official
``salience_detr_focalnet_large_lrf_800_1333``.

The recipe of ``salience_detr_r50_4scale_12ep.py`` (the official configs differ only in the backbone); the backbone
(``configs/common/backbones/focalnet_l.py``) is FocalNet-L with 4 focal levels (``focalnet_large_lrf_fl4``:
overlapping patch embeddings, post-norm blocks, layer scale 1e-4, normalised modulator), stochastic depth 0.5,
returning LayerNorm-ed stages 1-3 (strides 8, 16, 32), stem and stage 0 frozen. Weights: Microsoft's ImageNet-22k
``focalnet_large_lrf_384_fl4`` (a local path works too).

The official COCO checkpoint (``salience_detr_focalnet_large_lrf_800_1333_coco_1x.pth``, 57.3 AP) converts with
``scripts/convert_checkpoint.py --model salience_detr`` into this model with ``model.num_classes=91``.
"""

from ....configs.common.backbones.focalnet_l import backbone, out_channels
from .salience_detr_r50_4scale_12ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone = backbone
model.neck.in_channels = out_channels

train.output_dir = "./output/salience_detr_focalnet_l_4scale_12ep"
