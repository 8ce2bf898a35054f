"""Swin-L (ImageNet-22k) of the official Salience DETR / Relation DETR models: torchvision's Swin-L, window 7,
stochastic depth 0.2, stages 1-3 returned (strides 8, 16, 32), stem and stage 0 frozen. Weights: the official
ImageNet-22k Swin-L in torchvision's layout (a local path works too).

``out_channels``: the channels of the returned stages, the ``in_channels`` of the neck.
"""

from core.lazy import LazyCall as L
from modeling.backbones import SwinBackbone

backbone = L(SwinBackbone)(
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
out_channels = [384, 768, 1536]
