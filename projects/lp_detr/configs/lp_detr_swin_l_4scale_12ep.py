"""LP-DETR, Swin-L (ImageNet-22k), 4 scales, COCO 2017, 12 epochs.

The recipe of ``lp_detr_r50_4scale_12ep.py`` with the Swin-L backbone of the official Relation DETR / Salience DETR
Swin-L models: window 7, stochastic depth 0.2, stages 1-3 (strides 8, 16, 32), stem and stage 0 frozen.
"""

from engine.lazy import LazyCall as L
from modeling.backbones import SwinBackbone

from .lp_detr_r50_4scale_12ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

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

train.output_dir = "./output/lp_detr_swin_l_4scale_12ep"
