"""torchvision ResNet-50 with frozen batch norm, stem and stage 1 frozen, stages 2-4 returned (strides 8, 16, 32).

``out_channels``: the channels of the returned stages, the ``in_channels`` of the neck.
"""

from core.lazy import LazyCall as L
from modeling.backbones import ResNetBackbone

backbone = L(ResNetBackbone)(
    name="resnet50",
    out_features=("layer2", "layer3", "layer4"),
    freeze_at=2,
    norm="FrozenBN",
    weights="https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
)
out_channels = [512, 1024, 2048]
