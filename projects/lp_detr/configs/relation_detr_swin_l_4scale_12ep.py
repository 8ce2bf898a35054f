"""Relation DETR, Swin-L (ImageNet-22k), 4 scales, COCO 2017, 12 epochs: the official ``relation_detr_swin_l_800_1333``.

The recipe of ``relation_detr_r50_4scale_12ep.py`` with the official Swin-L backbone, which is the one of Salience
DETR's Swin-L model (same class and settings; ``salience_detr_swin_l_4scale_12ep.py``): torchvision's Swin-L,
window 7, stochastic depth 0.2, stages 1-3 (strides 8, 16, 32), stem and stage 0 frozen, ImageNet-22k weights.

The official COCO checkpoints (``relation_detr_swin_l_800_1333_coco_1x.pth``, 57.8 AP; ``..._coco_2x.pth``, 58.1 AP)
convert with ``scripts/convert_checkpoint.py --model relation_detr`` into this model with ``model.num_classes=91``.
"""

from engine.lazy import LazyCall as L
from modeling.backbones import SwinBackbone

from .relation_detr_r50_4scale_12ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

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

train.output_dir = "./output/relation_detr_swin_l_4scale_12ep"
