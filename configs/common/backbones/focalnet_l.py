"""FocalNet-L (ImageNet-22k, ``focalnet_large_lrf_fl4``) of the official Salience DETR / Relation DETR models: 4
focal levels, overlapping patch embeddings, post-norm blocks, layer scale 1e-4, normalised modulator, stochastic
depth 0.5, a LayerNorm on each returned stage; stages 1-3 returned (strides 8, 16, 32), stem and stage 0 frozen
(Relation DETR's 5-scale model returns all four stages and freezes nothing: its config edits this). Weights:
Microsoft's ImageNet-22k ``focalnet_large_lrf_384_fl4`` (a local path works too).

``out_channels``: the channels of the returned stages, the ``in_channels`` of the neck.
"""

from core.lazy import LazyCall as L
from modeling.backbones import FocalNetBackbone

backbone = L(FocalNetBackbone)(
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
out_channels = [384, 768, 1536]
