"""ConvNeXt-L of the official Salience DETR / Relation DETR models: torchvision's ConvNeXt-L, stochastic depth 0.5,
stages 1-3 returned (strides 8, 16, 32), stem and stage 0 frozen. Weights: torchvision's ImageNet-1k ConvNeXt-L, as
in the official configs (a local path works too).

``out_channels``: the channels of the returned stages, the ``in_channels`` of the neck.
"""

from core.lazy import LazyCall as L
from modeling.backbones import ConvNeXtBackbone

backbone = L(ConvNeXtBackbone)(
    dims=(192, 384, 768, 1536),
    depths=(3, 3, 27, 3),
    drop_path_rate=0.5,
    out_indices=(1, 2, 3),
    freeze_at=2,
    weights="https://download.pytorch.org/models/convnext_large-ea097f82.pth",
)
out_channels = [384, 768, 1536]
