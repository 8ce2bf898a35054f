"""Salience DETR, Swin-L (ImageNet-22k), 4 scales, COCO 2017, 12 epochs: the official ``salience_detr_swin_l_800_1333``.

The recipe of ``salience_detr_r50_4scale_12ep.py`` (the official configs differ only in the backbone); the backbone
is torchvision's Swin-L, window 7, stochastic depth 0.2, returning stages 1-3 (strides 8, 16, 32), stem and stage 0
frozen. Weights: the official ImageNet-22k Swin-L in torchvision's layout (a local path works too).

The official COCO checkpoint (``salience_detr_swin_l_800_1333_coco_1x.pth``, 56.5 AP) converts with
``scripts/convert_checkpoint.py --model salience_detr`` into this model with ``model.num_classes=91``.
"""

from core.lazy import LazyCall as L
from modeling.backbones import SwinBackbone

from .salience_detr_r50_4scale_12ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.backbone = L(SwinBackbone)(
    embed_dim=192,
    depths=(2, 2, 18, 2),
    num_heads=(6, 12, 24, 48),
    window_size=7,
    drop_path_rate=0.2,
    out_indices=(1, 2, 3),
    freeze_at=2,
    weights="https://github.com/xiuqhou/pretrained_weights/releases/download/v1.0.2-beta/"
    "swin_large_patch4_window7_224_22k.pth",
)
model.neck.in_channels = (384, 768, 1536)

train.output_dir = "./output/salience_detr_swin_l_4scale_12ep"
