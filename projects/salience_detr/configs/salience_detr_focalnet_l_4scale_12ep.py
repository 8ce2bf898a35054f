"""Salience DETR, FocalNet-L (ImageNet-22k), 4 scales, COCO 2017, 12 epochs: the official
``salience_detr_focalnet_large_lrf_800_1333``.

The recipe of ``salience_detr_r50_4scale_12ep.py`` (the official configs differ only in the backbone); the backbone
is FocalNet-L with 4 focal levels (``focalnet_large_lrf_fl4``: overlapping patch embeddings, post-norm blocks, layer
scale 1e-4, normalised modulator), stochastic depth 0.5, returning LayerNorm-ed stages 1-3 (strides 8, 16, 32), stem
and stage 0 frozen. Weights: Microsoft's ImageNet-22k ``focalnet_large_lrf_384_fl4`` (a local path works too).

The official COCO checkpoint (``salience_detr_focalnet_large_lrf_800_1333_coco_1x.pth``, 57.3 AP) converts with
``scripts/convert_checkpoint.py --model salience_detr`` into this model with ``model.num_classes=91``.
"""

from core.lazy import LazyCall as L
from modeling.backbones import FocalNetBackbone

from .salience_detr_r50_4scale_12ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.backbone = L(FocalNetBackbone)(
    embed_dim=192,
    depths=(2, 2, 18, 2),
    focal_levels=(4, 4, 4, 4),
    focal_windows=(3, 3, 3, 3),
    drop_path_rate=0.5,
    use_conv_embed=True,
    use_postln=True,
    use_postln_in_modulation=False,
    normalize_modulator=True,
    layerscale_value=1e-4,
    output_norms=True,
    out_indices=(1, 2, 3),
    freeze_at=2,
    weights="https://github.com/microsoft/FocalNet/releases/download/v1.0.0/focalnet_large_lrf_384_fl4.pth",
)
model.neck.in_channels = (384, 768, 1536)

train.output_dir = "./output/salience_detr_focalnet_l_4scale_12ep"
